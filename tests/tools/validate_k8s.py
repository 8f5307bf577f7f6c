#!/usr/bin/env python3
"""Offline validation of the rendered frameq Kubernetes manifests (one `kustomize build`).

1. Schemas. Core kinds: `kubernetes-validate -k VERSION --strict` (unknown fields fail);
   every core object must be reported "passed", a missing schema is an error too.
   KEDA ScaledObjects: validate_keda.mjs (KEDA's API schema + unknown-field check).
2. Consistency the schemas cannot see: ScaledObject triggers vs the ConfigMap and the topic
   partitions, probes vs the metrics port, grace period vs SHUTDOWN_GRACE_MS, security
   context, selectors, every setting of the program present, the ConfigMap accepted by
   `consumer --print-config`, alert rules well-formed and naming metrics that exist.

Usage: validate_k8s.py RENDERED.yaml --kubernetes-version V --keda-dir DIR
                       --source-dir SRC --consumer PATH [--expect-secret]
Exit 0 when everything holds; 1 with one "ERROR ..." line per problem.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

errors = []


def error(msg):
    errors.append(msg)
    print("ERROR " + msg)


def kn(obj):
    return "%s/%s" % (obj.get("kind"), (obj.get("metadata") or {}).get("name"))


def check_schemas(objs, args, tmp):
    core = [o for o in objs if not str(o.get("apiVersion", "")).startswith("keda.sh/")]
    keda = [o for o in objs if str(o.get("apiVersion", "")).startswith("keda.sh/")]
    core_file = os.path.join(tmp, "core.yaml")
    with open(core_file, "w") as f:
        yaml.safe_dump_all(core, f)
    r = subprocess.run([args.kubernetes_validate, "-k", args.kubernetes_version, "--strict",
                        core_file], capture_output=True, text=True)
    out = r.stdout + r.stderr
    passed = len(re.findall(r"^INFO .* passed for resource ", out, re.M))
    for line in out.splitlines():
        if not line.startswith("INFO "):
            error("kubernetes-validate: " + line.replace(core_file, "<rendered>"))
    if r.returncode != 0 and not errors:
        error("kubernetes-validate exited %d" % r.returncode)
    if passed != len(core):
        error("kubernetes-validate passed %d of %d core objects" % (passed, len(core)))
    else:
        print("INFO kubernetes-validate %s --strict: %d core objects passed"
              % (args.kubernetes_version, passed))

    if any(o.get("kind") != "ScaledObject" for o in keda):
        error("only ScaledObject is validated among keda.sh kinds: %s"
              % ", ".join(kn(o) for o in keda if o.get("kind") != "ScaledObject"))
    keda_file = os.path.join(tmp, "keda.json")
    with open(keda_file, "w") as f:
        json.dump([o for o in keda if o.get("kind") == "ScaledObject"], f)
    r = subprocess.run(["node", args.keda_script, keda_file], cwd=args.keda_dir,
                       capture_output=True, text=True)
    for line in (r.stdout + r.stderr).splitlines():
        if line.startswith("INFO "):
            print(line)
        elif line.strip():
            error("keda: " + line.removeprefix("ERROR "))
    if r.returncode != 0 and not any(e.startswith("keda:") for e in errors):
        error("validate_keda.mjs exited %d" % r.returncode)


def by_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def arg_after(args_list, flag):
    for i, a in enumerate(args_list or []):
        if a == flag and i + 1 < len(args_list):
            return args_list[i + 1]
        if isinstance(a, str) and a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def declared_metrics(source_dir):
    names = set()
    for d in ("consumer", "pipeline", "producer"):
        p = os.path.join(source_dir, d)
        for f in sorted(os.listdir(p)) if os.path.isdir(p) else []:
            if f.endswith(".c"):
                text = open(os.path.join(p, f), errors="replace").read()
                for m in re.finditer(r'fq_metrics_declare\(\s*\w+\s*,\s*"([a-zA-Z_:][\w:]*)"'
                                     r'\s*,\s*(FQ_METRIC_\w+)', text):
                    names.add(m.group(1))
                    if m.group(2) == "FQ_METRIC_HISTOGRAM":
                        names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


# Keys of the kafka trigger's metadata (KEDA docs, apache-kafka scaler). The metadata is a
# free string map in KEDA's schema, so a misspelt key would silently fall back to a default.
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
    "topic", "topicFromEnv", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
    "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "partitionLimitation",
    "version", "sasl", "tls", "unsafeSsl",
}


def check_consistency(objs, args):
    cms = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    cfg = (cms.get("frameq-config") or {}).get("data") or {}
    if not cfg:
        error("ConfigMap frameq-config missing or empty")
    secrets = by_kind(objs, "Secret")
    secret_keys = set()
    for s in secrets:
        secret_keys.update((s.get("data") or {}).keys())
        secret_keys.update((s.get("stringData") or {}).keys())
    if args.expect_secret and not secret_keys:
        error("no Secret rendered although this build should generate frameq-secrets")
    if not args.expect_secret:
        # The base does not ship the Secret: take its keys from the committed example.
        ex = os.path.join(args.source_dir, "deploy/k8s/base/secret.example.yaml")
        secret_keys.update((yaml.safe_load(open(ex)).get("stringData") or {}).keys())
    secret_names = {s["metadata"]["name"] for s in secrets}

    namespaces = {o["metadata"]["name"] for o in by_kind(objs, "Namespace")}
    for o in objs:
        ns = (o.get("metadata") or {}).get("namespace")
        if o.get("kind") != "Namespace" and ns not in namespaces:
            error("%s: namespace %r is not the rendered Namespace" % (kn(o), ns))

    # --- the program accepts the ConfigMap, and every setting is provided ----------------
    # Only the manifest's settings: nothing from the caller's environment (the local stack's
    # KAFKA_BROKERS etc.) may leak in and hide a missing key.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update({k: str(v) for k, v in cfg.items()})
    for k in secret_keys:
        env[k] = "postgresql://u:p@db.invalid:5432/frameq" if k == "DATABASE_URL" else "x"
    env["WORKER_ID"] = "consumer-main-abc12"
    r = subprocess.run([args.consumer, "--print-config"], env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        error("consumer --print-config rejects the ConfigMap: " + r.stderr.strip()[:500])
    else:
        origins = {}
        for line in r.stdout.splitlines():
            m = re.match(r"^([A-Z][A-Z0-9_]*)=.*#\s*(\w+)", line)
            if m:
                origins[m.group(1)] = m.group(2)
        for name, origin in sorted(origins.items()):
            if name == "JOB_INPUT":
                continue  # producer input, not a deployment setting
            if origin != "env":
                error("setting %s is not provided by ConfigMap, Secret or Deployment env "
                      "(consumer --print-config shows it as %s)" % (name, origin))
        unknown = sorted(k for k in cfg if k not in origins and not k.startswith("KAFKA_CONFIG_"))
        for k in unknown:
            error("ConfigMap key %s is not a setting the consumer knows" % k)
        print("INFO consumer --print-config accepts the ConfigMap (%d settings from env)"
              % sum(1 for v in origins.values() if v == "env"))

    grace_ms = int(re.sub(r"\D", "", cfg.get("SHUTDOWN_GRACE_MS", "25000")) or 25000)

    # --- Deployments --------------------------------------------------------------------
    deployments = {o["metadata"]["name"]: o for o in by_kind(objs, "Deployment")}
    roles = {}
    for name, d in deployments.items():
        spec = d["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels") or {}
        sel = spec["selector"].get("matchLabels") or {}
        if any(labels.get(k) != v for k, v in sel.items()):
            error("%s: selector %s does not match the pod labels" % (name, sel))
        if "replicas" in spec:
            error("%s: spec.replicas is set, but KEDA owns the replica count" % name)
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps * 1000 <= grace_ms:
            error("%s: terminationGracePeriodSeconds %s is not above SHUTDOWN_GRACE_MS %d ms"
                  % (name, tgps, grace_ms))
        psc = pod.get("securityContext") or {}
        if not psc.get("runAsNonRoot") or psc.get("runAsUser") != 10001:
            error("%s: pod must run as non-root uid 10001 (the image's user)" % name)
        c = pod["containers"][0]
        role = arg_after(c.get("args"), "--role")
        if role not in ("main", "retry"):
            error("%s: container args lack --role main|retry" % name)
        roles[name] = role
        img = c.get("image", "")
        if not re.match(r"^(.*/)?frameq:\d+\.\d+\.\d+$", img):
            error("%s: image %r is not a pinned frameq:X.Y.Z" % (name, img))
        refs = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
        srefs = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
        if "frameq-config" not in refs:
            error("%s: envFrom lacks configMapRef frameq-config" % name)
        if not any(s and s.startswith("frameq-secrets") for s in srefs):
            error("%s: envFrom lacks secretRef frameq-secrets" % name)
        if args.expect_secret and not any(s in secret_names for s in srefs):
            error("%s: secretRef %s does not name the rendered Secret" % (name, srefs))
        if not any(e.get("name") == "WORKER_ID" for e in c.get("env", [])):
            error("%s: WORKER_ID is not set from the pod name" % name)
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        metrics_port = int(cfg.get("METRICS_ADDR", "0.0.0.0:9400").rsplit(":", 1)[1])
        if metrics_port not in ports.values():
            error("%s: no containerPort %d (METRICS_ADDR)" % (name, metrics_port))
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                            ("startupProbe", "/healthz")):
            hg = (c.get(probe) or {}).get("httpGet") or {}
            port = ports.get(hg.get("port"), hg.get("port"))
            if hg.get("path") != path or port != metrics_port:
                error("%s: %s must GET %s on port %d" % (name, probe, path, metrics_port))
        res = c.get("resources") or {}
        for k in ("requests", "limits"):
            if "memory" not in (res.get(k) or {}):
                error("%s: resources.%s.memory missing" % (name, k))
        sc = c.get("securityContext") or {}
        if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
            error("%s: container needs readOnlyRootFilesystem and no privilege escalation"
                  % name)
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            error("%s: container must drop ALL capabilities" % name)
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        tmp_vol = [n for n, p in mounts.items() if p == "/tmp"]
        if not tmp_vol or "emptyDir" not in vols.get(tmp_vol[0], {}):
            error("%s: /tmp must be an emptyDir (the root filesystem is read-only)" % name)
        annotations = spec["template"]["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or \
                annotations.get("prometheus.io/port") != str(metrics_port):
            error("%s: pod template lacks prometheus.io/scrape and port annotations" % name)
    if sorted(r for r in roles.values() if r) != ["main", "retry"]:
        error("expected one Deployment per role (main, retry), got %s" % roles)

    # --- Pod Security Standard "restricted" (the Namespace enforces it) ----------------
    for o in by_kind(objs, "Deployment") + by_kind(objs, "Job"):
        pod = o["spec"]["template"]["spec"]
        psc = pod.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                error("%s: %s is not allowed (restricted)" % (kn(o), flag))
        if any("hostPath" in v for v in pod.get("volumes", [])):
            error("%s: hostPath volumes are not allowed (restricted)" % kn(o))
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c.get("securityContext") or {}
            where = "%s container %s" % (kn(o), c.get("name"))
            if sc.get("privileged"):
                error("%s: privileged (restricted)" % where)
            if sc.get("allowPrivilegeEscalation") is not False:
                error("%s: allowPrivilegeEscalation must be false (restricted)" % where)
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                error("%s: capabilities must drop ALL (restricted)" % where)
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                error("%s: runAsNonRoot must be true (restricted)" % where)
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                error("%s: runAsUser 0 (restricted)" % where)
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                error("%s: seccompProfile must be RuntimeDefault (restricted)" % where)
            if not sc.get("readOnlyRootFilesystem"):
                error("%s: readOnlyRootFilesystem must be true" % where)

    # --- topics Job: partitions bound the replica counts -------------------------------
    partitions = {}
    jobs = {o["metadata"]["name"]: o for o in by_kind(objs, "Job")}
    topics_job = [j for j in jobs.values()
                  if "topics" in (j["spec"]["template"]["spec"]["containers"][0].get("args")
                                  or [])]
    migrate_job = [j for j in jobs.values()
                   if "--migrate" in (j["spec"]["template"]["spec"]["containers"][0].get("args")
                                      or [])]
    if len(topics_job) != 1 or len(migrate_job) != 1:
        error("expected one `producer topics create` Job and one `consumer --migrate` Job")
    else:
        a = topics_job[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        main_p = int(arg_after(a, "--partitions") or 6)
        partitions["main"] = main_p
        partitions["retry"] = int(arg_after(a, "--retry-partitions") or main_p)
        if a[-2:] != ["topics", "create"]:
            error("topics Job: args must end with `topics create`, got %s" % a)

    # --- ScaledObjects -----------------------------------------------------------------
    seen_roles = set()
    for so in by_kind(objs, "ScaledObject"):
        name = so["metadata"]["name"]
        spec = so.get("spec") or {}
        target = (spec.get("scaleTargetRef") or {}).get("name")
        if target not in deployments:
            error("%s: scaleTargetRef %r is not a rendered Deployment" % (name, target))
            continue
        role = roles.get(target)
        seen_roles.add(role)
        topic = cfg.get("KAFKA_TOPIC") if role == "main" else cfg.get("KAFKA_RETRY_TOPIC")
        kafka = [t for t in spec.get("triggers", []) if t.get("type") == "kafka"]
        if len(kafka) != 1:
            error("%s: expected exactly one kafka trigger" % name)
            continue
        md = kafka[0].get("metadata") or {}
        for k in sorted(set(md) - KAFKA_TRIGGER_KEYS):
            error("%s: kafka trigger metadata key %r is not a KEDA kafka scaler parameter"
                  % (name, k))
        for key, want in (("topic", topic), ("consumerGroup", cfg.get("KAFKA_GROUP_ID")),
                          ("bootstrapServers", cfg.get("KAFKA_BROKERS"))):
            if md.get(key) != want:
                error("%s: trigger %s %r differs from the ConfigMap's %r"
                      % (name, key, md.get(key), want))
        if "lagThreshold" not in md:
            error("%s: kafka trigger without lagThreshold" % name)
        if role in partitions and spec.get("maxReplicaCount") != partitions[role]:
            error("%s: maxReplicaCount %s != %d partitions of %s (topics Job)"
                  % (name, spec.get("maxReplicaCount"), partitions[role], topic))
    if seen_roles != {"main", "retry"}:
        error("expected a ScaledObject per role, got %s" % sorted(map(str, seen_roles)))

    # --- PDBs and the Service select real pods -----------------------------------------
    pod_labels = [d["spec"]["template"]["metadata"].get("labels") or {}
                  for d in deployments.values()]
    covered = set()
    for pdb in by_kind(objs, "PodDisruptionBudget"):
        sel = pdb["spec"].get("selector", {}).get("matchLabels") or {}
        hits = [i for i, l in enumerate(pod_labels) if all(l.get(k) == v for k, v in sel.items())]
        if not hits:
            error("PodDisruptionBudget/%s selects no Deployment's pods" % pdb["metadata"]["name"])
        covered.update(hits)
    if len(covered) != len(pod_labels):
        error("not every Deployment is covered by a PodDisruptionBudget")
    for svc in by_kind(objs, "Service"):
        sel = svc["spec"].get("selector") or {}
        if not any(all(l.get(k) == v for k, v in sel.items()) for l in pod_labels):
            error("Service/%s selects no Deployment's pods" % svc["metadata"]["name"])

    # --- alert rules ---------------------------------------------------------------------
    rules_cm = cms.get("frameq-prometheus-rules")
    if not rules_cm:
        error("ConfigMap frameq-prometheus-rules missing")
        return
    metrics = declared_metrics(args.source_dir)
    if not metrics:
        error("found no fq_metrics_declare calls under %s" % args.source_dir)
    builtin = {"up", "absent", "rate", "increase", "sum", "max", "min", "by", "without",
               "clamp_min", "humanize", "on", "ignoring", "avg", "count"}
    n_alerts = 0
    for fname, text in (rules_cm.get("data") or {}).items():
        doc = yaml.safe_load(text)
        groups = (doc or {}).get("groups")
        if not isinstance(groups, list) or not groups:
            error("%s: no rule groups" % fname)
            continue
        for g in groups:
            extra = set(g) - {"name", "interval", "rules", "limit", "labels"}
            if extra or not g.get("name") or not isinstance(g.get("rules"), list):
                error("%s: malformed group %r (unknown keys %s)" % (fname, g.get("name"),
                                                                     sorted(extra)))
                continue
            for rule in g["rules"]:
                extra = set(rule) - {"alert", "record", "expr", "for", "keep_firing_for",
                                     "labels", "annotations"}
                rn = rule.get("alert") or rule.get("record")
                if extra:
                    error("%s: rule %s has unknown keys %s" % (fname, rn, sorted(extra)))
                if not rn or not str(rule.get("expr", "")).strip():
                    error("%s: rule without name or expr" % fname)
                    continue
                if "for" in rule and not re.match(r"^\d+[smhdwy]$", str(rule["for"])):
                    error("%s: %s: bad duration for: %r" % (fname, rn, rule["for"]))
                if rule.get("alert"):
                    n_alerts += 1
                    if (rule.get("labels") or {}).get("severity") not in ("warning", "critical"):
                        error("%s: %s: labels.severity must be warning or critical" % (fname, rn))
                    if not (rule.get("annotations") or {}).get("summary"):
                        error("%s: %s: annotations.summary missing" % (fname, rn))
                expr = re.sub(r'"[^"]*"', '""', str(rule["expr"]))
                for tok in set(re.findall(r"\b(frameq_[a-z0-9_]+)\b", expr)):
                    if tok not in metrics:
                        error("%s: %s uses %s, which no fq_metrics_declare declares"
                              % (fname, rn, tok))
                if expr.count("(") != expr.count(")"):
                    error("%s: %s: unbalanced parentheses" % (fname, rn))
    print("INFO %d alert rules checked against %d declared metric names" % (n_alerts, len(metrics)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("--kubernetes-validate", default="kubernetes-validate")
    ap.add_argument("--keda-dir", required=True, help="directory with node_modules")
    ap.add_argument("--keda-script",
                    default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "validate_keda.mjs"))
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--consumer", required=True)
    ap.add_argument("--expect-secret", action="store_true")
    args = ap.parse_args()

    try:
        objs = [o for o in yaml.safe_load_all(open(args.rendered)) if o]
    except yaml.YAMLError as e:
        error("rendered YAML does not parse: %s" % e)
        return 1
    print("INFO %d objects: %s" % (len(objs), ", ".join(sorted(kn(o) for o in objs))))
    with tempfile.TemporaryDirectory() as tmp:
        check_schemas(objs, args, tmp)
    try:
        check_consistency(objs, args)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
        error("manifest shape unexpected: %s: %s" % (type(e).__name__, e))
    print("%s: %d problem(s)" % ("FAIL" if errors else "OK", len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
