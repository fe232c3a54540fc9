#!/usr/bin/env bash
# deploy/check.sh: offline checks of the monitoring and deployment files.
#
#   1. promtool check rules  deploy/prometheus/alerts.yml
#   2. promtool check config deploy/prometheus/prometheus.yml
#   3. promtool test rules   deploy/prometheus/alerts_test.yml
#   4. deploy/grafana/dashboards/cdc.json is valid JSON and a sane dashboard
#      (every panel and variable on the datasource uid "prometheus", unique ids)
#   5. every cdc_* metric used in alerts.yml, alerts_test.yml and cdc.json is in
#      deploy/metrics.txt (histogram _bucket/_sum/_count suffixes stripped)
#   6. every docs/operations.md section named in alerts.yml and cdc.json
#      ("section \"Lag\"") is a heading there
#   7. docker-compose.yml validates, when docker-compose or `docker compose`
#      is installed (skipped otherwise)
#
# Needs bash, promtool (Debian: prometheus) and python3 with PyYAML
# (python3-yaml). Runs from any directory; exits non-zero on any failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
prom=$here/prometheus
dash=$here/grafana/dashboards/cdc.json
metrics=$here/metrics.txt

failed=0
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; failed=1; }

# A pyenv python3 may shadow the system one that has python3-yaml.
py=""
for candidate in python3 /usr/bin/python3; do
	if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml' 2>/dev/null; then
		py=$candidate
		break
	fi
done
for tool in promtool "${py:-python3}"; do
	command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (apt-get install prometheus python3-yaml)" >&2; exit 1; }
done
[ -n "$py" ] || { echo "FAIL: python3 PyYAML missing (apt-get install python3-yaml)" >&2; exit 1; }

step "promtool check rules"
promtool check rules "$prom/alerts.yml" || fail "promtool check rules"

step "promtool check config"
promtool check config "$prom/prometheus.yml" || fail "promtool check config"

step "promtool test rules"
promtool test rules "$prom/alerts_test.yml" || fail "promtool test rules"

step "dashboard JSON"
if "$py" -m json.tool "$dash" >/dev/null; then
	echo "  valid JSON: $dash"
else
	fail "invalid JSON: $dash"
fi

step "dashboard structure"
"$py" - "$dash" <<'PY' || fail "dashboard structure"
import json, sys

path = sys.argv[1]
d = json.load(open(path))
errs = []
ids = set()
for p in d.get("panels", []):
    pid = p.get("id")
    if pid in ids:
        errs.append(f"duplicate panel id {pid}")
    ids.add(pid)
    if "gridPos" not in p:
        errs.append(f"panel {pid} has no gridPos")
    if p.get("type") == "row":
        continue
    for obj in [p] + p.get("targets", []):
        ds = obj.get("datasource")
        if ds != {"type": "prometheus", "uid": "prometheus"}:
            errs.append(f"panel {pid} {p.get('title')!r}: datasource {ds!r}, want uid prometheus")
    if not p.get("targets"):
        errs.append(f"panel {pid} {p.get('title')!r} has no queries")
for v in d.get("templating", {}).get("list", []):
    if v.get("type") == "query" and v.get("datasource") != {"type": "prometheus", "uid": "prometheus"}:
        errs.append(f"variable {v.get('name')}: datasource {v.get('datasource')!r}, want uid prometheus")
if d.get("uid") != "cdc":
    errs.append(f"dashboard uid {d.get('uid')!r}, want cdc")
for e in errs:
    print("  " + e, file=sys.stderr)
if errs:
    sys.exit(1)
print(f"  {len(ids)} panels, datasource uid prometheus everywhere")
PY

step "metric names against deploy/metrics.txt"
"$py" - "$metrics" "$prom/alerts.yml" "$prom/alerts_test.yml" "$dash" <<'PY' || fail "unknown metric names"
import json, re, sys, yaml

metrics_file, alerts, tests, dash = sys.argv[1:5]
known = set()
for n, line in enumerate(open(metrics_file), 1):
    name = line.strip()
    if not name:
        continue
    if not re.fullmatch(r"cdc_[a-z0-9_]+", name):
        print(f"  {metrics_file}:{n}: not a cdc_* metric name: {name!r}", file=sys.stderr)
        sys.exit(1)
    known.add(name)
if not known:
    print(f"  {metrics_file} lists no metrics", file=sys.stderr)
    sys.exit(1)

# Only PromQL is searched (rule expr, test series and expressions, panel and
# variable queries), so prose such as the table name cdc_dead_letter in an
# annotation is not mistaken for a metric.
exprs = []  # (file, text)
for g in yaml.safe_load(open(alerts))["groups"]:
    for r in g["rules"]:
        exprs.append((alerts, r["expr"]))
for t in yaml.safe_load(open(tests))["tests"]:
    for s in t.get("input_series", []):
        exprs.append((tests, s["series"]))
    for e in t.get("promql_expr_test", []):
        exprs.append((tests, e["expr"]))

def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                exprs.append((dash, v))
            else:
                walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(json.load(open(dash)))

used, bad = set(), []
for f, text in exprs:
    for name in re.findall(r"(?<![A-Za-z0-9_:])cdc_[A-Za-z0-9_:]*", text):
        used.add(name)
        base = name
        if base not in known:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base not in known:
            bad.append(f"{f}: {name}")
for b in sorted(set(bad)):
    print(f"  not exported (deploy/metrics.txt): {b}", file=sys.stderr)
if not used:
    print("  no cdc_* metric found in the rules or dashboard: extraction broken?", file=sys.stderr)
    sys.exit(1)
if bad:
    sys.exit(1)
unused = sorted(known - {re.sub(r"_(bucket|sum|count)$", "", u) for u in used} - used)
print(f"  {len(used)} cdc_* names used, all exported" + (f"; unused: {', '.join(unused)}" if unused else ""))
PY

step "runbook sections named in alerts.yml and cdc.json"
"$py" - "$root/docs/operations.md" "$prom/alerts.yml" "$dash" <<'PY' || fail "runbook sections"
import json, re, sys

ops, alerts, dash = sys.argv[1:4]
headings = {m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", open(ops).read(), re.M)}
texts = [(alerts, open(alerts).read())]
def walk(o):
    if isinstance(o, dict):
        for v in o.values():
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
    elif isinstance(o, str):
        texts.append((dash, o))
walk(json.load(open(dash)))
named, bad = set(), []
for f, text in texts:
    text = re.sub(r"\s+", " ", text)
    # operations.md, section "X"; sections "X" and "Y"; operations.md, "X"
    for m in re.finditer(r'operations\.md[,:]? (?:sections? )?((?:"[^"]+"(?:,? (?:and |or )?(?:section )?)?)+)', text):
        for name in re.findall(r'"([^"]+)"', m.group(1)):
            named.add(name)
            if name not in headings:
                bad.append(f"{f}: {name!r}")
    for m in re.finditer(r'(?:otherwise|and) sections? "([^"]+)"(?: and "([^"]+)")?', text):
        for name in filter(None, m.groups()):
            named.add(name)
            if name not in headings:
                bad.append(f"{f}: {name!r}")
for b in sorted(set(bad)):
    print(f"  no such heading in docs/operations.md: {b}", file=sys.stderr)
if not named:
    print("  no runbook section found in the rules or dashboard: extraction broken?", file=sys.stderr)
    sys.exit(1)
if bad:
    sys.exit(1)
print(f"  {len(named)} sections named, all headings of docs/operations.md: {', '.join(sorted(named))}")
PY

step "docker-compose.yml"
if command -v docker-compose >/dev/null; then
	(cd "$root" && docker-compose config -q) && echo "  docker-compose config -q: ok" || fail "docker-compose config"
elif docker compose version >/dev/null 2>&1; then
	(cd "$root" && docker compose config -q) && echo "  docker compose config -q: ok" || fail "docker compose config"
else
	echo "  skipped: neither docker-compose nor the docker compose plugin is installed"
fi

echo
if [ "$failed" != 0 ]; then
	echo "deploy/check.sh: FAILED" >&2
	exit 1
fi
echo "deploy/check.sh: all checks passed"
