#!/usr/bin/python3
"""Checks of deploy/monitoring/: the Grafana dashboard and the Prometheus alert rules.

Run: check_monitoring.py dashboard [--root DIR]   the dashboard against dashboard.schema.json (Debian's
                                                   python3-jsonschema), unique panel ids, panels that
                                                   do not overlap, template variables that exist, and
                                                   every series its queries name documented in
                                                   docs/metrics.md
     check_monitoring.py rules [--root DIR]       `promtool check rules` and `promtool test rules`
                                                   (Debian's prometheus package), and every series the
                                                   rules name documented in docs/metrics.md
     check_monitoring.py --self-test              plant each kind of defect in a scratch copy; every
                                                   one must be reported
Exit 0, or 1 with one line per finding.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SERIES = re.compile(r"\b((?:gantry|process)_[a-z0-9_]+)\b")
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
BUILTIN_VARIABLES = {"__interval", "__rate_interval", "__range", "__name"}


def documented(root):
    """Series names in the tables of docs/metrics.md, with their types."""
    out = {}
    with open(os.path.join(root, "docs", "metrics.md")) as f:
        for line in f:
            m = re.match(r"^\| `([a-z_][a-z0-9_]*)` \| (counter|gauge|histogram) \|", line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def unknown_series(text, docs):
    """Series named in a PromQL expression that docs/metrics.md does not list."""
    bad = []
    for name in SERIES.findall(text):
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and docs.get(name[: -len(suffix)]) == "histogram":
                base = name[: -len(suffix)]
        if base not in docs:
            bad.append(name)
    return bad


def check_dashboard(root):
    import jsonschema

    findings = []
    mon = os.path.join(root, "deploy", "monitoring")
    with open(os.path.join(mon, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    with open(os.path.join(mon, "dashboard.schema.json")) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(dash), key=lambda e: list(e.path)):
        findings.append("schema: %s: %s" % ("/".join(str(p) for p in err.path) or "(top)", err.message))
    if findings:
        return findings
    docs = documented(root)
    variables = {v["name"] for v in dash["templating"]["list"]}
    seen_ids = set()
    cells = {}
    for p in dash["panels"]:
        if p["id"] in seen_ids:
            findings.append("panel %d (%s): duplicate id" % (p["id"], p["title"]))
        seen_ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] + g["w"] > 24:
            findings.append("panel %d (%s): wider than the grid" % (p["id"], p["title"]))
        for dx in range(g["w"]):
            for dy in range(g["h"]):
                cell = (g["x"] + dx, g["y"] + dy)
                if cell in cells:
                    findings.append("panel %d (%s) overlaps panel %d" % (p["id"], p["title"], cells[cell]))
                    break
                cells[cell] = p["id"]
            else:
                continue
            break
        texts = [json.dumps(p.get("datasource", {}))]
        for t in p.get("targets", []):
            texts.append(t["expr"])
            for name in unknown_series(t["expr"], docs):
                findings.append("panel %d (%s): %s is not in docs/metrics.md" % (p["id"], p["title"], name))
        for text in texts:
            for var in VARIABLE.findall(text):
                if var not in variables and var not in BUILTIN_VARIABLES:
                    findings.append("panel %d (%s): uses $%s, which is not a template variable" %
                                    (p["id"], p["title"], var))
    for v in dash["templating"]["list"]:
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        for name in unknown_series(q, docs) if v["type"] == "query" else []:
            findings.append("variable %s: %s is not in docs/metrics.md" % (v["name"], name))
    return findings


def check_rules(root):
    import yaml

    findings = []
    mon = os.path.join(root, "deploy", "monitoring")
    promtool = shutil.which("promtool")
    if promtool is None:
        return ["promtool not found: install Debian's prometheus package (tools/install-deps.sh)"]
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        out = subprocess.run([promtool] + args, cwd=mon, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            tail = (out.stdout + out.stderr).strip().splitlines()[-40:]
            findings.append("promtool %s failed:\n  %s" % (" ".join(args), "\n  ".join(tail)))
    docs = documented(root)
    with open(os.path.join(mon, "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            for name in unknown_series(rule.get("expr", ""), docs):
                findings.append("rule %s: %s is not in docs/metrics.md" % (rule.get("alert", "?"), name))
            for key in ("summary", "description", "runbook"):
                if not rule.get("annotations", {}).get(key):
                    findings.append("rule %s: no %s annotation" % (rule.get("alert", "?"), key))
    return findings


def self_test(root):
    """Each planted defect must be reported; the untouched tree must pass."""
    failures = []

    def scratch():
        d = tempfile.mkdtemp(prefix="monitoring-selftest-")
        shutil.copytree(os.path.join(root, "deploy", "monitoring"), os.path.join(d, "deploy", "monitoring"))
        os.makedirs(os.path.join(d, "docs"))
        shutil.copy(os.path.join(root, "docs", "metrics.md"), os.path.join(d, "docs", "metrics.md"))
        return d

    def dashboard_case(name, mutate, expect):
        d = scratch()
        path = os.path.join(d, "deploy", "monitoring", "grafana-dashboard.json")
        with open(path) as f:
            dash = json.load(f)
        mutate(dash)
        with open(path, "w") as f:
            json.dump(dash, f)
        found = check_dashboard(d)
        if not any(expect in x for x in found):
            failures.append("self-test %s: expected a finding with %r, got %r" % (name, expect, found))
        shutil.rmtree(d)

    def first_graph(dash):
        return [p for p in dash["panels"] if p["type"] != "row"][0]

    dashboard_case("unknown series", lambda d: first_graph(d)["targets"][0].update(expr="gantry_no_such_series"),
                   "gantry_no_such_series is not in docs/metrics.md")
    dashboard_case("duplicate id", lambda d: d["panels"][2].update(id=d["panels"][1]["id"]), "duplicate id")
    dashboard_case("overlap", lambda d: d["panels"][2].update(gridPos=copy.deepcopy(d["panels"][1]["gridPos"])),
                   "overlaps")
    dashboard_case("schema", lambda d: first_graph(d).pop("targets"), "schema:")
    dashboard_case("variable", lambda d: first_graph(d)["targets"][0].update(expr="gantry_namespaces{job=\"$nope\"}"),
                   "$nope")

    def rules_case(name, mutate, expect):
        d = scratch()
        path = os.path.join(d, "deploy", "monitoring", "alerts.yml")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(mutate(text))
        found = check_rules(d)
        if not any(expect in x for x in found):
            failures.append("self-test %s: expected a finding with %r, got %r" % (name, expect, found))
        shutil.rmtree(d)

    rules_case("unknown series", lambda t: t.replace("gantry_lease_held", "gantry_lease_heldd"),
               "gantry_lease_heldd is not in docs/metrics.md")
    rules_case("wrong threshold", lambda t: t.replace("< 0.10", "< 0.60"), "promtool test rules")
    rules_case("syntax", lambda t: t.replace("max by (job) (gantry_cluster_leader_known) == 0",
                                             "max by (job (gantry_cluster_leader_known) == 0"), "promtool check rules")
    for kind, fn in (("dashboard", check_dashboard), ("rules", check_rules)):
        found = fn(root)
        if found:
            failures.append("self-test: the tree itself fails the %s check: %r" % (kind, found))
    return failures


def main():
    args = sys.argv[1:]
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    if "--root" in args:
        root = args[args.index("--root") + 1]
    if args[:1] == ["dashboard"]:
        findings = check_dashboard(root)
    elif args[:1] == ["rules"]:
        findings = check_rules(root)
    elif args[:1] == ["--self-test"]:
        findings = self_test(root)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for f in findings:
        print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
