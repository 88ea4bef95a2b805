#!/usr/bin/env python3
"""Static checks of deploy/, run by deploy/check.sh (which adds the promtool, nats-server,
systemd-analyze and `notifyd check-config` checks).

    python3 deploy/check_deploy.py --work DIR

Checks that every YAML file parses, that the Grafana dashboards parse, that every PromQL
expression (alert rules, dashboards) names only metrics notifyd exports (taken from
crates/notifyd/src/metrics.rs) with labels those metrics have, and that the deployment files agree
with each other and with notifyd's configuration (ports, shutdown grace, *_env variables...).

Writes into DIR, for check.sh: dashboard-exprs.rules.yml (the dashboard's PromQL as recording
rules, for `promtool check rules`), configs.txt (one notifyd config file per line, to run
`notifyd check-config` on), env.txt (VAR names the configs' *_env keys need) and plugins.txt
(the plugin names the configs use).
Exits 1 with one line per problem.
"""

import argparse
import fnmatch
import json
import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
METRICS_RS = os.path.join(ROOT, "crates", "notifyd", "src", "metrics.rs")
CONFIG_RS = os.path.join(ROOT, "crates", "notifyd", "src", "config.rs")

problems = []
notes = []


def problem(where, what):
    problems.append(f"{os.path.relpath(where, ROOT) if os.path.isabs(where) else where}: {what}")


def rel(path):
    return os.path.relpath(path, ROOT)


# ------------------------------------------------------------------------------------- YAML ---

try:
    import yaml  # PyYAML

    HAVE_YAML = True
except ImportError:  # check.sh installs PyYAML when it can; this is the fallback
    HAVE_YAML = False


def minimal_yaml_check(path, text):
    """Without PyYAML: no tabs in indentation; outside block scalars, a value that opens a quote
    closes it on the same line; flow brackets balance."""
    ok = True
    block = None  # indentation of the line that opened a block scalar (| or >)
    for n, line in enumerate(text.split("\n"), 1):
        indent = len(line) - len(line.lstrip(" "))
        if block is not None:
            if not line.strip() or indent > block:
                continue
            block = None
        if re.match(r"^ *\t", line):
            problem(path, f"line {n}: tab in indentation")
            ok = False
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if re.search(r"(^|[:-]\s)[|>][+-]?\d*\s*(#.*)?$", s):
            block = indent
            continue
        m = re.match(r"""^(?:-\s+)?(?:[\w.$/-]+\s*:\s+)?(["'])(.*)$""", s)
        if m:
            q, rest = m.group(1), re.sub(r"\s+#.*$", "", m.group(2)).rstrip()
            if not rest.endswith(q):
                problem(path, f"line {n}: a quoted value does not end on its line")
                ok = False
        if s.count("[") != s.count("]") and not s.endswith(("[", ",")) and not s.startswith("]"):
            problem(path, f"line {n}: unbalanced [ ]")
            ok = False
    return ok


_yaml_cache = {}


def load_yaml_docs(path):
    """The documents of a YAML file, or None when it does not parse (reported once)."""
    if path not in _yaml_cache:
        _yaml_cache[path] = _load_yaml_docs(path)
    return _yaml_cache[path]


def _load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not HAVE_YAML:
        minimal_yaml_check(path, text)
        return None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        problem(path, f"YAML does not parse: {e}")
        return None


# ------------------------------------------------------------------------ exported metrics ---

TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container", "environment"}
# Series that Prometheus itself creates for every target.
PROMETHEUS_SERIES = {"up": {"job", "instance"}, "scrape_duration_seconds": {"job", "instance"}}


def exported_metrics():
    """{series name: set of labels} for every series notifyd exports, histograms expanded."""
    with open(METRICS_RS, encoding="utf-8") as f:
        src = f.read()
    found = [(m.start(), m.group(1)) for m in re.finditer(r'"(notifyd_[a-z0-9_]+)"', src)]
    if not found:
        problem(METRICS_RS, "no metric names found (expected string literals \"notifyd_...\")")
        return {}
    histograms = set(re.findall(r'HistogramOpts::new\(\s*"(notifyd_[a-z0-9_]+)"', src))
    metrics = {}
    for i, (pos, name) in enumerate(found):
        end = found[i + 1][0] if i + 1 < len(found) else len(src)
        m = re.search(r'&\[\s*((?:"[a-z_]+"\s*,?\s*)*)\]', src[pos:end])
        labels = set(re.findall(r'"([a-z_]+)"', m.group(1))) if m else set()
        if name in metrics:
            problem(METRICS_RS, f"metric {name} registered twice")
        metrics[name] = labels
    series = {}
    for name, labels in metrics.items():
        if name in histograms:
            series[name + "_bucket"] = labels | {"le"}
            series[name + "_sum"] = labels
            series[name + "_count"] = labels
        else:
            series[name] = labels
    return series


# ---------------------------------------------------------------------------------- PromQL ---

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "atan2", "inf", "nan", "start", "end",
}
GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$__\w+|\$\w+")


def promql_names(expr):
    """(metric names with the label names of their matchers, label names of by/on/... clauses)."""
    e = re.sub(r"#[^\n]*", "", expr)  # comments
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors, subqueries ([$__rate_interval], [6h:5m])
    selectors = []
    # name{matchers} and bare {matchers}
    for m in re.finditer(r'(?<![\w.$])([a-zA-Z_:][\w:]*)?\s*\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}', e):
        labels = set(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*"', m.group(2)))
        selectors.append((m.group(1), labels))
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', e)  # strings
    e = re.sub(r"\{(?:[^{}])*\}", " ", e)  # matchers
    grouping = set()
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        grouping |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = {}
    for m in re.finditer(r"(?<![\w.$:])([a-zA-Z_:][\w:]*)(?!\w)(\s*\()?", e):
        ident, call = m.group(1), m.group(2)
        if call or ident in KEYWORDS:
            continue
        names.setdefault(ident, set())
    for name, labels in selectors:
        if name:
            names.setdefault(name, set()).update(labels)
        elif labels:
            names.setdefault("{}", set()).update(labels)
    return names, grouping


def check_promql(where, expr, series):
    names, grouping = promql_names(expr)
    if not names:
        problem(where, f"expression names no metric: {expr.strip()[:80]}")
    all_labels = set().union(*series.values()) | TARGET_LABELS | {"le"}
    for name, labels in names.items():
        if name == "{}":
            problem(where, "a selector without a metric name")
            continue
        known = series.get(name, PROMETHEUS_SERIES.get(name))
        if known is None:
            hint = ""
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if base + "_bucket" in series:
                hint = f" ({base} is a histogram: use {base}_bucket, _sum or _count)"
            problem(where, f"metric {name} is not exported by notifyd (crates/notifyd/src/metrics.rs){hint}")
            continue
        for label in labels - known - TARGET_LABELS:
            problem(where, f"metric {name} has no label {label!r} (it has: {', '.join(sorted(known)) or 'none'})")
    for label in grouping - all_labels:
        problem(where, f"label {label!r} in by/on/without/ignoring is not a label of any notifyd metric")
    return set(names)


# ------------------------------------------------------------------------------ durations ---

def seconds(text):
    """Seconds of a humantime / Go / systemd duration ("20s", "1m30s", "40", "500ms")."""
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    total, pos = 0.0, 0
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d)", text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"cannot read duration {text!r}")
    return total


def default_grace():
    with open(CONFIG_RS, encoding="utf-8") as f:
        m = re.search(r"ShutdownConfig \{ grace: Duration::from_secs\((\d+)\) \}", f.read())
    return float(m.group(1)) if m else 20.0


def grace_of(cfg):
    g = cfg.get("shutdown", {}).get("grace")
    return seconds(g) if g else default_grace()


def env_keys(cfg):
    """VAR names named by *_env keys anywhere in a notifyd config."""
    out = set()

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k.endswith("_env") and isinstance(x, str):
                    out.add(x)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(cfg)
    return out


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


# -------------------------------------------------------------------------------- checks ---

def check_alerts(path, docs, series, used):
    if not docs:
        return
    doc = docs[0]
    rules_seen = set()
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not groups:
        problem(path, "no groups")
        return
    count = 0
    for g in groups:
        for r in g.get("rules", []):
            name = r.get("alert") or r.get("record")
            where = f"{rel(path)} [{name}]"
            if not name:
                problem(path, "a rule without alert/record name")
                continue
            if r.get("alert"):
                count += 1
                if name in rules_seen:
                    problem(where, "alert name used twice")
                rules_seen.add(name)
                if "for" not in r:
                    problem(where, "no `for:`")
                sev = (r.get("labels") or {}).get("severity")
                if sev not in ("critical", "warning", "info"):
                    problem(where, f"severity label is {sev!r}, expected critical, warning or info")
                ann = r.get("annotations") or {}
                for key in ("summary", "description"):
                    if not str(ann.get(key, "")).strip():
                        problem(where, f"no {key} annotation")
            used |= check_promql(where, str(r.get("expr", "")), series)
    notes.append(f"{rel(path)}: {count} alerts, PromQL names only exported metrics")
    return rules_seen


def check_alert_tests(path, docs, alerts):
    if not docs or alerts is None:
        return
    tested_firing, tested_quiet = set(), set()
    for t in docs[0].get("tests", []):
        for a in t.get("alert_rule_test", []) or []:
            (tested_firing if a.get("exp_alerts") else tested_quiet).add(a.get("alertname"))
    for name in sorted(alerts):
        if name not in tested_firing:
            problem(path, f"no test where {name} fires")
    if not tested_quiet:
        problem(path, "no test where an alert stays quiet")
    unknown = (tested_firing | tested_quiet) - alerts
    for name in sorted(unknown):
        problem(path, f"tests an alert that alerts.yml does not define: {name}")


def substitute_grafana(expr):
    e = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return GRAFANA_VARS.sub(".*", e)


def check_dashboard(path, series, used, work):
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        problem(path, f"JSON does not parse: {e}")
        return
    exprs = []
    ids = set()

    def panels_of(ps):
        for p in ps:
            yield p
            yield from panels_of(p.get("panels", []))

    for p in panels_of(dash.get("panels", [])):
        pid = p.get("id")
        if pid in ids:
            problem(path, f"panel id {pid} used twice")
        ids.add(pid)
        if "gridPos" not in p:
            problem(path, f"panel {p.get('title')!r} has no gridPos")
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((f"{rel(path)} panel {p.get('title')!r}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"\s*label_values\(\s*([^,()]+?)\s*,\s*(\w+)\s*\)\s*", q)
            if m:
                metric, label = m.groups()
                exprs.append((f"{rel(path)} variable {v.get('name')!r}", metric))
                names, _ = promql_names(metric)
                for n in names:
                    if n in series and label not in series[n] | TARGET_LABELS:
                        problem(path, f"variable {v.get('name')!r}: {n} has no label {label!r}")
            else:
                exprs.append((f"{rel(path)} variable {v.get('name')!r}", q))
    if not exprs:
        problem(path, "no PromQL expressions found")
    for where, expr in exprs:
        used |= check_promql(where, substitute_grafana(expr), series)
    boxes = [(p.get("title"), p["gridPos"]) for p in panels_of(dash.get("panels", [])) if "gridPos" in p]
    for i, (t1, a) in enumerate(boxes):
        if a.get("x", 0) + a.get("w", 0) > 24:
            problem(path, f"panel {t1!r} is wider than the 24-column grid")
        for t2, b in boxes[i + 1:]:
            if (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                    and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]):
                problem(path, f"panels {t1!r} and {t2!r} overlap")
    # For `promtool check rules`: every expression as a recording rule, variables substituted.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": substitute_grafana(e)} for i, (_, e) in enumerate(exprs)]}]}
    out = os.path.join(work, os.path.basename(path) + ".rules.yml")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(rules, f, indent=1)  # JSON is YAML
    with open(os.path.join(work, "promql-files.txt"), "a", encoding="utf-8") as f:
        f.write(out + "\n")
    notes.append(f"{rel(path)}: {len(exprs)} expressions, {len(ids)} panels")


def check_compose(path, docs, configs):
    if not docs:
        return
    c = docs[0]
    base = os.path.dirname(path)
    services = c.get("services", {})
    for svc in ("nats", "notifyd", "prometheus", "grafana"):
        if svc not in services:
            problem(path, f"no service {svc!r}")
    for name, s in services.items():
        b = s.get("build")
        if b:
            ctx = os.path.normpath(os.path.join(base, b.get("context", ".") if isinstance(b, dict) else b))
            if not os.path.isdir(ctx):
                problem(path, f"service {name}: build context {ctx} does not exist")
            df = os.path.join(ctx, b.get("dockerfile", "Dockerfile") if isinstance(b, dict) else "Dockerfile")
            if not os.path.isfile(df):
                problem(path, f"service {name}: {rel(df)} does not exist")
        for v in s.get("volumes", []) or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                full = os.path.normpath(os.path.join(base, src))
                if not os.path.exists(full):
                    problem(path, f"service {name}: volume source {src} does not exist")
                elif isinstance(v, str) and v.split(":")[1] == "/etc/notifyd/notifyd.toml":
                    cfg = configs.get(full)
                    if cfg is not None and "stop_grace_period" in s:
                        if seconds(s["stop_grace_period"]) <= grace_of(cfg):
                            problem(path, f"service {name}: stop_grace_period {s['stop_grace_period']} is not above [shutdown] grace")
                    if cfg is not None:
                        listen = cfg.get("metrics", {}).get("listen", "0.0.0.0:9464")
                        if not listen.startswith(("0.0.0.0:", "[::]:")):
                            problem(path, f"service {name}: {src} listens on {listen}, unreachable from other containers")
    notifyd = services.get("notifyd", {})
    if notifyd and "stop_grace_period" not in notifyd:
        problem(path, "service notifyd: no stop_grace_period (docker's default 10s is below the 20s grace)")
    # Grafana: the provisioned dashboard path must be where the dashboard is mounted.
    graf = services.get("grafana", {})
    mounts = [v.split(":")[1] for v in graf.get("volumes", []) if isinstance(v, str) and ":" in v]
    prov = os.path.join(DEPLOY, "grafana", "provisioning", "dashboards")
    for f in sorted(os.listdir(prov)) if os.path.isdir(prov) else []:
        docs2 = load_yaml_docs(os.path.join(prov, f)) or [{}]
        for p in docs2[0].get("providers", []):
            dpath = p.get("options", {}).get("path", "")
            if dpath and not any(m == dpath or m.startswith(dpath.rstrip("/") + "/") for m in mounts):
                problem(os.path.join(prov, f), f"dashboards path {dpath} is not mounted in the grafana service")


def check_kubernetes(kdir, work, configs_out, envs_out):
    docs = {}
    for f in sorted(os.listdir(kdir)):
        if f.endswith((".yaml", ".yml")):
            for d in load_yaml_docs(os.path.join(kdir, f)) or []:
                if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                    problem(os.path.join(kdir, f), "a document without apiVersion/kind")
                    continue
                if d["kind"] != "Kustomization" and not (d.get("metadata") or {}).get("name"):
                    problem(os.path.join(kdir, f), f"{d['kind']} without metadata.name")
                docs.setdefault(d["kind"], []).append((f, d))
    if not HAVE_YAML:
        return
    kust = docs.get("Kustomization", [(None, {})])[0][1]
    for r in kust.get("resources", []):
        if not os.path.exists(os.path.join(kdir, r)):
            problem(os.path.join(kdir, "kustomization.yaml"), f"resource {r} does not exist")
    listed = set(kust.get("resources", []))
    for f in sorted(os.listdir(kdir)):
        if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and f not in listed:
            problem(os.path.join(kdir, "kustomization.yaml"), f"{f} is not listed in resources")

    # ConfigMap -> notifyd.toml
    cfg, cfg_path = None, None
    for f, cm in docs.get("ConfigMap", []):
        text = (cm.get("data") or {}).get("notifyd.toml")
        if text is None:
            continue
        cfg_path = os.path.join(work, f"kubernetes-{cm['metadata']['name']}.toml")
        with open(cfg_path, "w", encoding="utf-8") as out:
            out.write(text)
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problem(os.path.join(kdir, f), f"notifyd.toml does not parse: {e}")
            cfg = None
        configs_out.append(cfg_path)
    if cfg is None:
        problem(kdir, "no ConfigMap with a notifyd.toml key")
        cfg = {}
    needed_env = env_keys(cfg)
    envs_out |= needed_env
    metrics_port = port_of(cfg.get("metrics", {}).get("listen", "0.0.0.0:9464"))
    cb = cfg.get("callbacks", {}).get("listen")
    grace = grace_of(cfg)

    secrets = {}
    for f, s in docs.get("Secret", []):
        secrets[s["metadata"]["name"]] = set((s.get("stringData") or {}).keys()) | set((s.get("data") or {}).keys())

    deps = docs.get("Deployment", [])
    if not deps:
        problem(kdir, "no Deployment")
    for f, dep in deps:
        where = os.path.join(kdir, f)
        spec = dep.get("spec", {})
        if spec.get("replicas") != 2:
            problem(where, f"replicas is {spec.get('replicas')}, expected 2")
        tmpl = spec.get("template", {})
        pod = tmpl.get("spec", {})
        labels = (tmpl.get("metadata") or {}).get("labels", {})
        sel = (spec.get("selector") or {}).get("matchLabels", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            problem(where, "selector.matchLabels does not match the pod template labels")
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps <= grace:
            problem(where, f"terminationGracePeriodSeconds {tgps} is not above [shutdown] grace ({grace:g}s)")
        psc = pod.get("securityContext", {})
        for c in pod.get("containers", []):
            cw = f"{rel(where)} container {c.get('name')}"
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problem(cw, "runAsNonRoot is not set")
            if not sc.get("readOnlyRootFilesystem"):
                problem(cw, "readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(cw, "allowPrivilegeEscalation is not false")
            if not (c.get("resources") or {}).get("requests") or not (c.get("resources") or {}).get("limits"):
                problem(cw, "resources requests and limits are not both set")
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
            if metrics_port not in ports.values():
                problem(cw, f"no containerPort {metrics_port} ([metrics] listen)")
            if cb and port_of(cb) not in ports.values():
                problem(cw, f"no containerPort {port_of(cb)} ([callbacks] listen)")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                port = get.get("port")
                port = ports.get(port, port)
                if get.get("path") != path or port != metrics_port:
                    problem(cw, f"{probe} is not httpGet {path} on the metrics port {metrics_port}")
            env_names = set()
            for e in c.get("env", []):
                env_names.add(e.get("name"))
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
                if ref:
                    if ref.get("name") not in secrets:
                        notes.append(f"{rel(where)}: Secret {ref.get('name')} is expected to exist in the cluster")
                    elif ref.get("key") not in secrets[ref["name"]]:
                        problem(cw, f"env {e.get('name')}: Secret {ref['name']} has no key {ref.get('key')}")
            has_env_from = bool(c.get("envFrom"))
            for var in sorted(needed_env - env_names):
                if not has_env_from:
                    problem(cw, f"notifyd.toml names ${var} in a *_env key, but the container does not set it")
            mounts = [m.get("mountPath") for m in c.get("volumeMounts", [])]
            args = " ".join(c.get("args", []) + c.get("command", []))
            m = re.search(r"--config[ =](\S+)", args)
            cfg_file = m.group(1) if m else "/etc/notifyd/notifyd.toml"
            if os.path.dirname(cfg_file) not in mounts:
                problem(cw, f"the config {cfg_file} is not in a mounted volume")

    services = docs.get("Service", [])
    for f, svc in services:
        sel = (svc.get("spec") or {}).get("selector", {})
        pod_labels = deps[0][1]["spec"]["template"]["metadata"]["labels"] if deps else {}
        if any(pod_labels.get(k) != v for k, v in sel.items()):
            problem(os.path.join(kdir, f), "Service selector does not match the Deployment's pods")
    svc_ports = {p.get("name") for _, s in services for p in (s.get("spec") or {}).get("ports", [])}
    for f, sm in docs.get("ServiceMonitor", []):
        for ep in (sm.get("spec") or {}).get("endpoints", []):
            if ep.get("port") not in svc_ports:
                problem(os.path.join(kdir, f), f"endpoint port {ep.get('port')!r} is not a Service port name")
    notes.append(f"{rel(kdir)}: {sum(len(v) for v in docs.values())} documents")


def parse_unit(path):
    entries = []
    with open(path, encoding="utf-8") as f:
        section = None
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            entries.append((section, key.strip(), value.strip()))
    return entries


def check_systemd(path):
    entries = parse_unit(path)
    svc = {}
    for section, k, v in entries:
        if section == "Service":
            svc.setdefault(k, []).append(v)

    def one(k):
        return svc.get(k, [None])[-1]

    expect = {
        "ProtectSystem": {"strict"}, "NoNewPrivileges": {"yes", "true"}, "PrivateTmp": {"yes", "true"},
        "ProtectHome": {"yes", "true", "read-only", "tmpfs"}, "KillSignal": {"SIGTERM"},
        "Restart": {"on-failure"}, "CapabilityBoundingSet": {""},
    }
    for k, allowed in expect.items():
        if one(k) not in allowed:
            problem(path, f"{k}={one(k)} (expected {' or '.join(sorted(allowed)) or 'empty'})")
    if not (one("DynamicUser") in ("yes", "true") or one("User")):
        problem(path, "neither DynamicUser=yes nor User=")
    if not one("RestrictAddressFamilies"):
        problem(path, "no RestrictAddressFamilies=")
    if "@system-service" not in " ".join(svc.get("SystemCallFilter", [])):
        problem(path, "SystemCallFilter does not allow @system-service")
    if not one("EnvironmentFile"):
        problem(path, "no EnvironmentFile= for secrets")
    stop = one("TimeoutStopSec")
    if not stop or seconds(stop) <= default_grace():
        problem(path, f"TimeoutStopSec={stop} is not above the default [shutdown] grace ({default_grace():g}s)")


def dockerignore_excludes(patterns, path):
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        rx = re.escape(p).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        if any(re.fullmatch(rx, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not neg
    return excluded


def check_dockerfile(path, ignore_path):
    if not os.path.isfile(path):
        problem(path, "missing")
        return
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", f.read())
    lines = [l.strip() for l in text.split("\n") if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        problem(path, "not a multi-stage build (expected a builder and a runtime stage)")
    # The operator's build: the default members (daemon and plugins) in a profile Cargo.toml has.
    build = re.search(r"cargo build [^\n]*--profile\s+\"?\$\{?PROFILE", text)
    default = re.search(r"^ARG PROFILE=(\S+)$", text, re.M)
    if not build or not default:
        problem(path, "no `ARG PROFILE=<profile>` and `cargo build --profile \"$PROFILE\"`")
    else:
        with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
            cargo = f.read()
        name = default.group(1)
        if name not in ("release", "dev") and f"[profile.{name}]" not in cargo:
            problem(path, f"builds profile {name!r}, which Cargo.toml does not define")
    if re.search(r"cargo build [^\n]*--workspace", text):
        problem(path, "builds the whole workspace (bench, test kit): build the default members")
    for needle in ("/usr/lib/notifyd/plugins", "/usr/bin/notifyd", "/etc/notifyd", "libnotifyd_*.so"):
        if needle not in text:
            problem(path, f"does not mention {needle}")
    users = [l.split(None, 1)[1] for l in lines if l.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problem(path, "the runtime stage does not switch to a non-root USER")
    exposed = set()
    for l in lines:
        if l.upper().startswith("EXPOSE "):
            exposed |= {p.split("/")[0] for p in l.split()[1:]}
    for port in ("9464", "9465"):
        if port not in exposed:
            problem(path, f"does not EXPOSE {port}")
    patterns = []
    if os.path.isfile(ignore_path):
        with open(ignore_path, encoding="utf-8") as f:
            patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    else:
        problem(ignore_path, "missing")
    # What the build needs must reach the build context.
    needed = ["Cargo.toml", "Cargo.lock", "crates/notifyd/src/main.rs", "plugins/sandbox/Cargo.toml",
              "include/notifyd_plugin.h"]
    for m in re.finditer(r"deploy/[\w./-]+", text):
        needed.append(m.group(0))
    for n in needed:
        if not os.path.exists(os.path.join(ROOT, n)):
            problem(path, f"uses {n}, which does not exist")
        elif dockerignore_excludes(patterns, n):
            problem(ignore_path, f"excludes {n}, which the image build needs")
    for n in ("target/release/notifyd", ".git/config"):
        if not dockerignore_excludes(patterns, n):
            problem(ignore_path, f"does not exclude {n.split('/')[0]}/")


def check_streams_script(path):
    with open(CONFIG_RS, encoding="utf-8") as f:
        cfg = f.read()
    with open(path, encoding="utf-8") as f:
        script = f.read()
    defaults = dict(re.findall(r'\b(stream|status_stream|ledger_bucket|tracking_stream|dead_letter_stream|held_stream): "([A-Za-z0-9_-]+)"\.into\(\)', cfg))
    for key, value in defaults.items():
        if value not in script:
            problem(path, f"does not use notifyd's default {key} {value}")
    for subject in ("$PREFIX.sms.send", "$PREFIX.sms.send.urgent", "$PREFIX.sms.send.normal", "$PREFIX.sms.send.bulk",
                    "$PREFIX.sms.status.>", "$PREFIX.sms.track", "$PREFIX.sms.dead", "$PREFIX.sms.held"):
        if subject not in script:
            problem(path, f"does not create a stream on {subject}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="scratch directory for the files check.sh uses")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    open(os.path.join(args.work, "promql-files.txt"), "w").close()

    series = exported_metrics()
    notes.append(f"{rel(METRICS_RS)}: {len(series)} exported series names")

    # Every YAML file parses.
    yaml_docs = {}
    for dirpath, _, files in os.walk(DEPLOY):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")):
                p = os.path.join(dirpath, f)
                yaml_docs[p] = load_yaml_docs(p)
    parsed = sum(1 for d in yaml_docs.values() if d is not None)
    if HAVE_YAML:
        notes.append(f"{parsed} of {len(yaml_docs)} YAML files parse")
    else:
        notes.append(f"{len(yaml_docs)} YAML files checked minimally (PyYAML missing: pip install pyyaml)")

    # notifyd configs under deploy/ (plain files; the Kubernetes one is extracted below).
    configs = {}
    config_files = []
    for dirpath, _, files in os.walk(DEPLOY):
        for f in sorted(files):
            if f.endswith(".toml"):
                p = os.path.join(dirpath, f)
                try:
                    with open(p, "rb") as fh:
                        configs[p] = tomllib.load(fh)
                except tomllib.TOMLDecodeError as e:
                    problem(p, f"TOML does not parse: {e}")
                config_files.append(p)
    envs = set()
    for c in configs.values():
        envs |= env_keys(c)
    plugins = set()

    used = set()
    alerts_path = os.path.join(DEPLOY, "prometheus", "alerts.yml")
    alerts = check_alerts(alerts_path, yaml_docs.get(alerts_path), series, used) if HAVE_YAML else None
    tests_path = os.path.join(DEPLOY, "prometheus", "alerts_test.yml")
    if HAVE_YAML:
        check_alert_tests(tests_path, yaml_docs.get(tests_path), alerts)
    gdir = os.path.join(DEPLOY, "grafana")
    for f in sorted(os.listdir(gdir)):
        if f.endswith(".json"):
            check_dashboard(os.path.join(gdir, f), series, used, args.work)
    unused = sorted(n for n in series if n not in used and not n.endswith(("_sum", "_count")))
    if unused:
        notes.append("exported but used by no alert or panel: " + ", ".join(unused))

    if HAVE_YAML:
        compose = os.path.join(DEPLOY, "compose.yaml")
        check_compose(compose, yaml_docs.get(compose), configs)
    check_kubernetes(os.path.join(DEPLOY, "kubernetes"), args.work, config_files, envs)
    for p in config_files:
        try:
            with open(p, "rb") as fh:
                cfg = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            continue
        plugins |= {b["plugin"] for b in cfg.get("providers", []) if "/" not in b.get("plugin", "/")}
    check_systemd(os.path.join(DEPLOY, "systemd", "notifyd.service"))
    check_dockerfile(os.path.join(ROOT, "Dockerfile"), os.path.join(ROOT, ".dockerignore"))
    check_streams_script(os.path.join(DEPLOY, "nats", "create-streams.sh"))

    with open(os.path.join(args.work, "configs.txt"), "w", encoding="utf-8") as f:
        f.write("".join(p + "\n" for p in config_files))
    with open(os.path.join(args.work, "plugins.txt"), "w", encoding="utf-8") as f:
        f.write("".join(v + "\n" for v in sorted(plugins)))
    with open(os.path.join(args.work, "env.txt"), "w", encoding="utf-8") as f:
        f.write("".join(v + "\n" for v in sorted(envs)))

    for n in notes:
        print(f"  ok: {n}")
    if problems:
        for p in problems:
            print(f"  FAIL: {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
