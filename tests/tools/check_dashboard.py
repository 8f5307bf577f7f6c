#!/usr/bin/env python3
"""Checks a Grafana dashboard of frameq against what a live worker exports.

    check_dashboard.py DASHBOARD --scrape METRICS_TXT --target-labels TARGETS_JSON
                       [--prometheus URL --var name=value ... --timeout S]

1. Structure: schemaVersion >= 36, a stable uid, a Prometheus datasource variable that every
   panel, target and query variable uses, unique panel ids, non-overlapping grid positions, every
   non-row panel with targets (unique refIds, an expression), only defined variables used.
2. Names and labels, against the worker's /metrics text (METRICS_TXT): every frameq_* name in
   every expression (panel targets and label_values() of query variables) is a sample name the
   worker exports (histogram suffixes only on histogram families; histogram_quantile only over
   _bucket with `le` kept); every label in a selector's matchers, in by/without/on/ignoring
   and in a legend's {{label}} exists on the metrics of that expression, or is a target label
   Prometheus attaches (TARGETS_JSON: the labels of the scrape target, from /api/v1/targets).
3. PromQL syntax, offline: every expression (variables substituted) goes into a rules file that
   `promtool check rules` must accept: Prometheus' own parser.
4. With --prometheus: every expression, variables substituted (--var), is evaluated by that
   Prometheus server (which scrapes the worker) and must return at least one series.

Exit 0 when all pass; 1 with one "ERROR ..." line per problem.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range"}
PANEL_TYPES = {"row", "stat", "timeseries", "state-timeline", "gauge", "bargauge", "table",
               "heatmap", "text"}

NAME_RE = re.compile(r"\bframeq_[A-Za-z0-9_:]*")
SELECTOR_RE = re.compile(r"(frameq_[A-Za-z0-9_:]*)\s*(?:\{([^}]*)\})?")
MATCHER_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
GROUPING_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
VAR_RE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|\$([A-Za-z0-9_]+)")
LEGEND_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
LABEL_VALUES_RE = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")

errors = []


def error(msg):
    errors.append(msg)
    print("ERROR " + msg)


def parse_scrape(text):
    """Returns (types: family -> type, labels: sample name -> set of label names)."""
    types, labels = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s", line)
        if not m:
            error("scrape: unparsable sample line %r" % line[:200])
            continue
        names = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"', m.group(3) or ""))
        labels.setdefault(m.group(1), set()).update(names)
    return types, labels


def check_expr(where, expr, legend, types, labels, targets):
    """Names and labels of one PromQL expression against the scrape."""
    names = set(NAME_RE.findall(expr))
    if not names:
        error("%s: no frameq metric in %r" % (where, expr))
        return
    for n in sorted(names):
        if types.get(n) == "histogram":
            error("%s: %s is a histogram: use %s_bucket/_sum/_count" % (where, n, n))
        elif n not in labels:
            error("%s: metric %s is not exported by the worker" % (where, n))
    known = [labels[n] for n in names if n in labels]

    def has_label(lbl, sets):
        return lbl in targets or (sets and all(lbl in s for s in sets))

    # Selectors: every '{' belongs to a frameq_ name, every matcher names a label of it.
    n_sel = 0
    for m in SELECTOR_RE.finditer(expr):
        if m.group(2) is None:
            continue
        n_sel += 1
        body, pos = m.group(2), 0
        while pos < len(body):
            mm = MATCHER_RE.match(body, pos)
            if not mm:
                error("%s: cannot read label matchers {%s} of %s" % (where, body, m.group(1)))
                break
            lbl = mm.group(1)
            if m.group(1) in labels and not has_label(lbl, [labels[m.group(1)]]):
                error("%s: label %s is not on %s (exported: %s; target labels: %s)" %
                      (where, lbl, m.group(1), sorted(labels[m.group(1)]), sorted(targets)))
            pos = mm.end()
    if expr.count("{") != n_sel:
        error("%s: a selector without a frameq metric name in %r" % (where, expr))

    grouped = set()
    for m in GROUPING_RE.finditer(expr):
        for lbl in filter(None, (x.strip() for x in m.group(2).split(","))):
            grouped.add(lbl)
            if not has_label(lbl, known):
                error("%s: %s (%s): label %s is not on every metric of the expression %s" %
                      (where, m.group(1), m.group(2), lbl, sorted(names)))

    if "histogram_quantile" in expr:
        for n in names:
            if not n.endswith("_bucket") or types.get(n[: -len("_bucket")]) != "histogram":
                error("%s: histogram_quantile over %s, not the _bucket of a histogram" % (where, n))
        if "le" not in grouped:
            error("%s: histogram_quantile without `le` in its aggregation" % where)

    for lbl in LEGEND_RE.findall(legend or ""):
        if lbl not in grouped and not has_label(lbl, known):
            error("%s: legend {{%s}} is not a label of the result" % (where, lbl))


def substitute(expr, values):
    def repl(m):
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return VAR_RE.sub(repl, expr)


def collect(dash):
    """(where, expr, legend) of every query in the dashboard."""
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = LABEL_VALUES_RE.match(q or "")
        if not m:
            error("variable %s: query is not label_values(SELECTOR, LABEL): %r" % (v.get("name"), q))
            continue
        # label_values(sel, l) lists the values of l on sel: the same as count by (l) (sel).
        out.append(("variable %s" % v["name"], "count by (%s) (%s)" % (m.group(2), m.group(1)), ""))
    for p in all_panels(dash):
        for t in p.get("targets") or []:
            out.append(("panel %s %r target %s" % (p.get("id"), p.get("title"), t.get("refId")),
                        t.get("expr") or "", t.get("legendFormat") or ""))
    return out


def all_panels(dash):
    for p in dash.get("panels") or []:
        yield p
        for q in p.get("panels") or []:
            yield q


def check_structure(dash):
    sv = dash.get("schemaVersion")
    if not isinstance(sv, int) or sv < 36:
        error("schemaVersion %r: want an integer >= 36" % sv)
    uid = dash.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        error("dashboard uid %r: want a stable uid of 1-40 [A-Za-z0-9_-]" % uid)
    if not dash.get("title"):
        error("dashboard without a title")
    variables = dash.get("templating", {}).get("list", [])
    names = [v.get("name") for v in variables]
    if len(set(names)) != len(names):
        error("duplicate variable names: %s" % names)
    dsv = [v for v in variables if v.get("name") == "datasource"]
    if not dsv or dsv[0].get("type") != "datasource" or dsv[0].get("query") != "prometheus":
        error("no variable `datasource` of type datasource with query prometheus")
    for v in variables:
        if v.get("type") == "query" and v.get("datasource") != DS:
            error("variable %s: datasource %r is not %r" % (v.get("name"), v.get("datasource"), DS))
    defined = set(names) | BUILTIN_VARS

    ids, cells = {}, {}
    for p in all_panels(dash):
        pid, title = p.get("id"), p.get("title")
        where = "panel %s %r" % (pid, title)
        if not isinstance(pid, int):
            error("%s: id is not an integer" % where)
        elif pid in ids:
            error("%s: id %d also used by panel %r" % (where, pid, ids[pid]))
        else:
            ids[pid] = title
        if not title:
            error("%s: no title" % where)
        if p.get("type") not in PANEL_TYPES:
            error("%s: unknown panel type %r" % (where, p.get("type")))
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] < 0 or g["w"] < 1 or \
                g["h"] < 1 or g["x"] + g["w"] > 24:
            error("%s: gridPos %r not inside the 24-column grid" % (where, g))
        else:
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
            shared = sorted(mine & cells.keys())
            if shared:
                x, y = shared[0]
                error("%s: overlaps panel %s at column %d row %d" % (where, cells[(x, y)], x, y))
            cells.update(dict.fromkeys(mine, pid))
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DS:
            error("%s: datasource %r is not %r" % (where, p.get("datasource"), DS))
        targets = p.get("targets") or []
        if not targets:
            error("%s: no targets" % where)
        refs = [t.get("refId") for t in targets]
        if None in refs or len(set(refs)) != len(refs):
            error("%s: refIds missing or not unique: %s" % (where, refs))
        for t in targets:
            if t.get("datasource") != DS:
                error("%s target %s: datasource %r is not %r" % (where, t.get("refId"),
                                                                  t.get("datasource"), DS))
            if not (t.get("expr") or "").strip():
                error("%s target %s: empty expr" % (where, t.get("refId")))
    for where, expr, _ in collect(dash):
        for m in VAR_RE.finditer(expr):
            name = m.group(1) or m.group(2)
            if name not in defined:
                error("%s: variable $%s is not defined" % (where, name))


def promtool_parse(queries, values):
    """Every expression through Prometheus' parser: `promtool check rules` (offline)."""
    rules = [{"record": "frameq_dashboard:q%d" % i, "expr": substitute(e, values)}
             for i, (_, e, _) in enumerate(queries)]
    with tempfile.NamedTemporaryFile("w", suffix=".rules.json", delete=False) as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
        path = f.name
    try:
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        out = (r.stdout + r.stderr).strip()
        found = re.findall(r'rule (\d+), "[^"]*": (.*)', out)
        for num, msg in found:
            where, e = queries[int(num) - 1][:2]
            error("%s: promtool check rules rejects %r: %s" % (where, substitute(e, values), msg))
        if not found:
            error("promtool check rules failed: %s" % out[-1500:])
    else:
        print("INFO promtool check rules parses all %d expressions" % len(rules))


def live(queries, values, url, timeout):
    """Each expression evaluated by a real Prometheus must return at least one series."""
    pending = list(queries)
    last = {}
    deadline = time.monotonic() + timeout
    while pending:
        still = []
        for q in pending:
            where, expr = q[0], substitute(q[1], values)
            try:
                with urllib.request.urlopen(url + "/api/v1/query?" +
                                            urllib.parse.urlencode({"query": expr}), timeout=10) as r:
                    ans = json.load(r)
            except urllib.error.HTTPError as e:
                ans = json.load(e)
            except urllib.error.URLError as e:
                error("cannot query Prometheus at %s: %s" % (url, e.reason))
                return
            if ans.get("status") != "success":
                error("%s: Prometheus rejects %r: %s" % (where, expr, ans.get("error")))
                continue
            if not ans["data"]["result"]:
                last[where] = expr
                still.append(q)
        pending = still
        if pending and time.monotonic() > deadline:
            for q in pending:
                error("%s: no series from Prometheus after %d s for %r" % (q[0], timeout, last[q[0]]))
            break
        if pending:
            time.sleep(0.5)
    print("INFO Prometheus returned series for %d of %d expressions" %
          (len(queries) - len(pending), len(queries)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dashboard")
    ap.add_argument("--scrape", required=True, help="the worker's /metrics text")
    ap.add_argument("--target-labels", required=True,
                    help="JSON object: labels Prometheus attaches to the target")
    ap.add_argument("--prometheus", help="base URL of a Prometheus scraping the worker")
    ap.add_argument("--var", action="append", default=[], help="name=value for $name")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()

    with open(a.dashboard) as f:
        dash = json.load(f)
    with open(a.scrape) as f:
        types, labels = parse_scrape(f.read())
    with open(a.target_labels) as f:
        targets = set(json.load(f))
    values = dict(v.split("=", 1) for v in a.var)
    values.setdefault("__rate_interval", "1m")
    values.setdefault("__interval", "15s")
    values.setdefault("__range", "6h")
    for name in ("namespace", "role", "worker"):
        values.setdefault(name, ".*")

    check_structure(dash)
    queries = collect(dash)
    for where, expr, legend in queries:
        check_expr(where, expr, legend, types, labels, targets)
    used = {n for _, e, _ in queries for n in NAME_RE.findall(e)}
    print("INFO %d expressions use %d metric names: %s" % (len(queries), len(used), " ".join(sorted(used))))
    promtool_parse(queries, values)
    if a.prometheus and not errors:
        live(queries, values, a.prometheus.rstrip("/"), a.timeout)
    if errors:
        print("FAIL %d error(s)" % len(errors))
        return 1
    print("OK dashboard %s: %d panels, %d expressions" %
          (dash.get("uid"), sum(1 for _ in all_panels(dash)), len(queries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
