#!/usr/bin/env bash
# The container image cannot be built here (no Docker engine), so this proves the next best
# thing: every shared library the built `consumer` and `producer` load (ldd) belongs to a
# Debian package that the runtime stage of deploy/docker/Dockerfile installs, or to a
# dependency of one, or to the base image. Host and image are both Debian 12, so the
# host's package database answers "which package ships this file" and "what does it depend on".
#
# Base image: debian:12-slim is a debootstrap minbase, i.e. the Priority: required packages
# (and apt); those count as present. "important" packages are NOT in slim, so they do not count.
#
# The build stage is checked too: a -dev package for every REQUIRED pkg-config module of
# CMakeLists.txt. The check then runs against copies of the Dockerfile with one package
# removed and must fail, so a test that cannot fail would show up here.
#
# Env: FQ_SOURCE_DIR, FQ_BUILD_DIR (set by ctest). FQ_DOCKERFILE overrides the Dockerfile;
# FQ_IMAGE_BINARIES (space separated) overrides the programs checked; FQ_IMAGE_BUILD=0 skips
# replaying the build stage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${FQ_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
dockerfile=${FQ_DOCKERFILE:-$src/deploy/docker/Dockerfile}

fail() {
    echo "test_image_libs: FAIL: $*" >&2
    exit 1
}

[ -n "${FQ_BUILD_DIR:-}" ] || fail "FQ_BUILD_DIR is not set (run through ctest, or export it)"
[ -f "$dockerfile" ] || fail "no Dockerfile at $dockerfile"
for tool in ldd dpkg-query python3; do
    command -v "$tool" >/dev/null || fail "$tool not found (this check needs a Debian host)"
done
if ! grep -q '^VERSION_ID="12"' /etc/os-release; then
    fail "host is not Debian 12: its package database cannot stand in for the image's"
fi

read -r -a binaries <<<"${FQ_IMAGE_BINARIES:-$FQ_BUILD_DIR/consumer $FQ_BUILD_DIR/producer}"
for b in "${binaries[@]}"; do
    [ -x "$b" ] || fail "missing program $b: build it first (ninja -C \$FQ_BUILD_DIR)"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
replay_failed=0

# ---- the build stage, replayed on this host -------------------------------------------------
# No engine, but the same OS and compiler as debian:12: copy what the stage COPYs, run its
# cmake RUN line with /out inside a temp dir. This catches a COPY list that misses a source
# directory and warnings that only the Release (-O3) build raises under -DWERROR=ON. The
# binaries it installs are exactly what the image ships, so they join the ldd check.
# FQ_IMAGE_BUILD=0 skips this step (about a minute on 2 cores).
if [ "${FQ_IMAGE_BUILD:-1}" != 0 ]; then
    python3 - "$dockerfile" "$src" "$tmp/img" >"$tmp/replay.sh" <<'PY' ||
import re, shlex, sys
dockerfile, src, root = sys.argv[1:]
text = open(dockerfile).read().replace("\\\n", " ")
stage = re.split(r"(?im)^\s*FROM\s+", text)[1]  # the first stage builds
workdir = "/"
out = ["set -euo pipefail", "mkdir -p %s" % shlex.quote(root + "/out")]
for line in stage.splitlines():
    words = line.split()
    if not words:
        continue
    op = words[0].upper()
    if op == "WORKDIR":
        workdir = words[1]
        out.append("mkdir -p %s" % shlex.quote(root + workdir))
    elif op == "COPY" and not any(w.startswith("--") for w in words[1:]):
        *srcs, dst = words[1:]
        dst = dst if dst.startswith("/") else workdir.rstrip("/") + "/" + dst
        for s_ in srcs:
            target = root + dst
            if dst.endswith("/") and not s_.endswith("/"):
                target = root + dst  # a file into a directory
            out.append("mkdir -p %s && cp -a %s %s" % (
                shlex.quote(root + dst if dst.endswith("/") else root + dst.rsplit("/", 1)[0]),
                shlex.quote(src + "/" + s_.rstrip("/")) + ("/." if s_.endswith("/") else ""),
                shlex.quote(target)))
    elif op == "RUN" and "cmake" in line:
        cmd = line.split(None, 1)[1].replace("/out", root + "/out")
        out.append("cd %s && %s" % (shlex.quote(root + workdir), cmd))
if not any(l.startswith("cd ") for l in out):
    sys.exit("no cmake RUN line in the build stage")
print("\n".join(out))
PY
        fail "could not read the build stage of $dockerfile"
    echo "== replaying the build stage of $(basename "$dockerfile") (Release, as the image builds)"
    if ! CMAKE_BUILD_PARALLEL_LEVEL=2 bash "$tmp/replay.sh" >"$tmp/replay.log" 2>&1; then
        { grep -E "error:|Error|No such file" "$tmp/replay.log" | head -20; echo "..."
          tail -5 "$tmp/replay.log"; } >&2
        echo "test_image_libs: the build stage failed; the library checks still run" >&2
        replay_failed=1
    else
        grep -E "^(consumer|producer) \(frameq\)" "$tmp/replay.log" | sed "s/^/  built: /"
        binaries+=("$tmp/img/out/bin/consumer" "$tmp/img/out/bin/producer")
    fi
fi

# check DOCKERFILE: prints a table, exit 0 when every library is covered, 1 otherwise.
check() {
    FQ_SRC=$src FQ_BUILD=$FQ_BUILD_DIR python3 - "$1" "${binaries[@]}" <<'PY'
import os, re, subprocess, sys

dockerfile, binaries = sys.argv[1], sys.argv[2:]

def die(msg):
    print("  " + msg)
    sys.exit(1)

# -- the runtime stage's apt-get install packages -----------------------------------------
text = open(dockerfile).read().replace("\\\n", " ")
stages = re.split(r"(?im)^\s*FROM\s+", text)
if len(stages) < 3:
    die("expected a multi-stage Dockerfile (build + runtime)")
runtime = stages[-1]  # the last stage is what the image ships
base_image = runtime.split()[0]
if not base_image.startswith("debian:12"):
    die("runtime stage is %s, expected debian:12-slim" % base_image)
listed = []
for m in re.finditer(r"apt-get\s+install\s+([^&;\n]*)", runtime):
    listed += [t for t in m.group(1).split() if not t.startswith("-")]
if not listed:
    die("no apt-get install line in the runtime stage")
if "--no-install-recommends" not in runtime:
    die("runtime apt-get install lacks --no-install-recommends (Recommends are not counted)")

# -- the host's package database ------------------------------------------------------------
fmt = "${Package}\t${Priority}\t${Provides}\t${Pre-Depends}\t${Depends}\t${db:Status-Abbrev}\n"
out = subprocess.run(["dpkg-query", "-W", "-f=" + fmt], check=True, capture_output=True,
                     text=True).stdout
pkgs, provides = {}, {}
def names(field):
    """'a (>= 1) | b:any, c' -> [['a', 'b'], ['c']]"""
    groups = []
    for grp in filter(None, (g.strip() for g in field.split(","))):
        groups.append([re.sub(r"[:\s(].*", "", alt.strip()) for alt in grp.split("|")])
    return groups
for line in out.splitlines():
    name, prio, prov, pre, dep, status = line.split("\t")
    if not status.startswith("ii"):
        continue
    pkgs[name] = {"prio": prio, "deps": names(pre) + names(dep)}
    for p in names(prov):
        provides.setdefault(p[0], []).append(name)

def resolve(group):
    """The installed package apt would use for one dependency (first alternative wins)."""
    for alt in group:
        if alt in pkgs:
            return alt
        if alt in provides:
            return provides[alt][0]
    return None

def closure(roots):
    """package -> the root it was reached from"""
    seen, todo = {}, [(r, r) for r in roots]
    while todo:
        p, via = todo.pop()
        if p in seen:
            continue
        seen[p] = via
        for grp in pkgs.get(p, {"deps": []})["deps"]:
            r = resolve(grp)
            if r and r not in seen:
                todo.append((r, via))
    return seen

missing_listed = [p for p in listed if p not in pkgs]
if missing_listed:
    die("listed packages not installed on this host, so their dependencies are unknown: "
        + " ".join(missing_listed) + " (apt-get install them here)")
base = closure([p for p, v in pkgs.items() if v["prio"] == "required"])
image = closure(listed)

# -- what the programs load -----------------------------------------------------------------
SANITIZER = re.compile(r"/lib(asan|ubsan|lsan|tsan)\.so")
libs = {}
for b in binaries:
    out = subprocess.run(["ldd", b], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if "not found" in line:
            die("%s: %s (the build host itself lacks it)" % (b, line))
        m = re.match(r"(\S+)\s+=>\s+(/\S+)", line) or re.match(r"(/\S+)\s+\(", line)
        if not m:
            continue  # linux-vdso: provided by the kernel
        path = m.group(m.lastindex)
        if SANITIZER.search(path):
            continue  # this test build used SANITIZE=ON; the image build does not
        libs.setdefault(path, set()).add(os.path.basename(b))

# file -> package, from dpkg's own file lists (what `dpkg -S` reads, in one pass).
files = {}
info = "/var/lib/dpkg/info"
for name in os.listdir(info):
    if name.endswith(".list"):
        pkg = name[:-5].split(":")[0]
        with open(os.path.join(info, name), errors="replace") as f:
            for line in f:
                files.setdefault(line.rstrip("\n"), pkg)

def owner(path):
    """The package shipping path, trying the merged-/usr spellings of the same file."""
    cands = [path, os.path.realpath(path)]
    for c in list(cands):
        cands.append("/usr" + c if not c.startswith("/usr/") else c[4:])
    for c in cands:
        if c in files:
            return files[c]
    return None

bad = 0
print("  %-36s %-28s %s" % ("library", "package", "present because"))
for path in sorted(libs):
    pkg = owner(path)
    if pkg is None:
        why, bad = "NO PACKAGE OWNS THIS FILE", bad + 1
    elif pkg in listed:
        why = "listed in the runtime stage"
    elif pkg in base:
        why = "base image (Priority: required)"
    elif pkg in image:
        why = "dependency of " + image[pkg]
    else:
        why, bad = "MISSING from the runtime stage", bad + 1
    print("  %-36s %-28s %s" % (os.path.basename(path), pkg, why))
print("  %d libraries, %d not covered; runtime stage lists: %s"
      % (len(libs), bad, " ".join(listed)))

# -- the build stage: a -dev package for every REQUIRED pkg-config module of CMakeLists.txt --
build_stage = stages[1]
build_listed = []
for m in re.finditer(r"apt-get\s+install\s+([^&;\n]*)", build_stage):
    build_listed += [t for t in m.group(1).split() if not t.startswith("-")]
build_closure = closure([p for p in build_listed if p in pkgs])
cmake = open(os.path.join(os.environ["FQ_SRC"], "CMakeLists.txt")).read()
modules = []
for m in re.finditer(r"pkg_check_modules\(\s*\w+\s+([^)]*)\)", cmake, re.S):
    words = m.group(1).split()
    if "REQUIRED" in words:
        modules += [w for w in words if w not in ("REQUIRED", "IMPORTED_TARGET", "QUIET")]
# librdkafka is built from source (deploy/local/librdkafka), named by its .pc file's path: what
# the build stage needs for it are the modules that .pc file requires (libssl, libsasl2, ...).
rdkafka_pc = [w for w in modules if w.startswith("${")]
if len(rdkafka_pc) != 1:
    die("expected one pkg-config module named by a variable (the built librdkafka), got %s"
        % rdkafka_pc)
modules.remove(rdkafka_pc[0])
cache = open(os.path.join(os.environ["FQ_BUILD"], "CMakeCache.txt")).read()
prefix = re.search(r"^FQ_RDKAFKA_PREFIX:PATH=(.*)$", cache, re.M).group(1)
pc = open(os.path.join(prefix, "lib/pkgconfig/rdkafka-static.pc")).read()
modules += re.search(r"^Requires:(.*)$", pc, re.M).group(1).replace(",", " ").split()
pc_owner = {}
for path, pkg in files.items():
    if "/pkgconfig/" in path and path.endswith(".pc"):
        pc_owner.setdefault(os.path.basename(path)[:-3], pkg)
for mod in modules:
    pkg = pc_owner.get(mod)
    if pkg is None:
        print("  pkg-config %-20s NO PACKAGE ON THIS HOST SHIPS %s.pc" % (mod, mod))
        bad += 1
    elif pkg not in build_closure:
        print("  pkg-config %-20s %-26s MISSING from the build stage" % (mod, pkg))
        bad += 1
print("  %d required pkg-config modules; build stage lists: %s"
      % (len(modules), " ".join(build_listed)))
sys.exit(1 if bad else 0)
PY
}

echo "== $dockerfile"
check "$dockerfile" || fail "the Dockerfile misses packages the build or the programs need (above)"

# Negative cases: drop one library package from the runtime list; the check must notice.
for drop in libpq5 libjansson4 libavformat59; do
    grep -qw "$drop" "$dockerfile" || fail "$drop is not in the runtime stage at all"
    sed "/^FROM debian:12-slim/,\$ s/[[:space:]]$drop\\b//" "$dockerfile" >"$tmp/Dockerfile"
    if grep -qw "$drop" <(sed -n '/^FROM debian:12-slim/,$p' "$tmp/Dockerfile"); then
        fail "could not remove $drop from the copy (test is broken)"
    fi
    echo "== negative: runtime stage without $drop (must fail)"
    if check "$tmp/Dockerfile"; then
        fail "the check passed although $drop was removed: it cannot detect a missing library"
    fi
done
# And the build stage: without a -dev package, cmake's pkg_check_modules would fail (libpq-dev
# for frameq itself, libsasl2-dev for the librdkafka it builds).
for drop in libpq-dev libsasl2-dev; do
    sed "0,/[[:space:]]$drop\b/s///" "$dockerfile" >"$tmp/Dockerfile"
    cmp -s "$dockerfile" "$tmp/Dockerfile" && fail "could not remove $drop from the copy"
    echo "== negative: build stage without $drop (must fail)"
    if check "$tmp/Dockerfile"; then
        fail "the check passed although $drop was removed from the build stage"
    fi
done
if [ "$replay_failed" = 1 ]; then
    fail "the image's build stage fails on this tree (its cmake RUN line, replayed; errors above)"
fi
echo "test_image_libs: OK"
