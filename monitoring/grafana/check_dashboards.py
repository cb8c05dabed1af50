#!/usr/bin/env python3
"""Static checks of vllm-batch's Grafana dashboards (standard library only).

    python3 monitoring/grafana/check_dashboards.py              # run the checks
    python3 monitoring/grafana/check_dashboards.py --list-exprs # print every Prometheus expression

The checks: every dashboard under dashboards/ parses, has a title and a unique uid, and defines the
template variables its queries use; every panel (rows aside) has a title, a description, a
gridPos inside the 24-column grid that overlaps no other panel, and a datasource whose uid is
provisioned in provisioning/datasources/datasources.yml; every Prometheus panel has a unit and
targets with an expression, and its expressions use only the variables that the live test
substitutes ($job, $instance, $model, $__rate_interval, $__interval), have balanced brackets and
quotes, and filter vllm_* families only on labels that the README gives them; Loki panels never
use batch_id as a stream label; every metric family of the README's "Observability" table appears
in some expression, and vLLM's own series appear on the GPU dashboard; expected-empty.json maps
expressions that exist to a reason. The last line is "N passed, M failed"; the exit status is 1
when anything failed.

--list-exprs prints one JSON object per line, {"dashboard": uid, "panel": title, "expr": expr},
for every Prometheus target of every panel, as written (variables not substituted). The live
monitoring test evaluates them against a real Prometheus.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DASHBOARDS = HERE / "dashboards"
DATASOURCES = HERE / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDER = HERE / "provisioning" / "dashboards" / "dashboards.yml"
EXPECTED_EMPTY = HERE / "expected-empty.json"
README = REPO / "README.md"

EXPECTED_DASHBOARDS = {
    "batch-processing.json": ("vllm-batch-processing", "vLLM Batch — Batch processing"),
    "system-health.json": ("vllm-batch-system", "vLLM Batch — System health"),
    "gpu-inference.json": ("vllm-batch-gpu", "vLLM Batch — GPU & inference"),
}
GPU_DASHBOARD_UID = "vllm-batch-gpu"
VLLM_SERIES = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:gpu_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
]
REQUIRED_VARIABLES = {"job", "instance", "model"}
# Variables a Prometheus expression may use: the live test substitutes exactly these.
PROM_VARIABLES = {"job", "instance", "model", "__rate_interval", "__interval"}
# Labels Prometheus itself adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
VISUAL_PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "logs", "text", "piechart", "heatmap"}


class Checker:
    def __init__(self):
        self.passed = 0
        self.failures = []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
        return ok


def datasource_uids(path):
    """uid -> type of each provisioned datasource (a minimal reading of the YAML: list items
    that start with `- ` open a datasource, `uid:` and `type:` lines fill it)."""
    out = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        m = re.match(r"^\s*-\s+(\w+):\s*(.*)$", line)
        if m:
            current = {}
            key, value = m.group(1), m.group(2)
        else:
            m = re.match(r"^\s*(\w+):\s*(.*)$", line)
            if not m:
                continue
            key, value = m.group(1), m.group(2)
        if current is None:
            continue
        value = value.strip().strip("'\"")
        if key in ("uid", "type", "name") and value:
            current[key] = value
            if "uid" in current:
                out[current["uid"]] = current.get("type")
        if key == "type" and "uid" in current:
            out[current["uid"]] = value
    return out


def readme_families(path):
    """family -> set of labels, from the first table of README's "Observability" section: first
    column's backticked vllm_* names, third column's backticked labels."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"^## Observability\s*$(.*?)(?=^## )", text, re.S | re.M)
    if not m:
        return None
    families = {}
    in_table = False
    for line in m.group(1).splitlines():
        if line.startswith("|"):
            in_table = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            names = re.findall(r"`(vllm_[a-zA-Z0-9_]+)`", cells[0])
            labels = set(re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*)`", cells[2])) if len(cells) > 2 else set()
            for name in names:
                families[name] = labels
        elif in_table:
            break
    return families


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])


def strip_strings(expr):
    """The expression with the contents of its string literals blanked out."""
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def balanced(expr):
    """Brackets pair up and every string literal is closed."""
    body = strip_strings(expr)
    if re.search(r"[\"'`]", body.replace('""', "")):
        return False
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in body:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def variables_in(text):
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


SELECTOR = re.compile(r"\b(vllm_[a-zA-Z0-9_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def family_of(series, families):
    if series in families:
        return series, False
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in families:
            return series[: -len(suffix)], suffix == "_bucket"
    return None, False


def prom_targets(dashboard):
    """(panel title, expr) of every Prometheus target of every panel."""
    for panel in walk_panels(dashboard.get("panels") or []):
        if panel.get("type") == "row":
            continue
        panel_ds = (panel.get("datasource") or {}).get("uid")
        for t in panel.get("targets") or []:
            ds = (t.get("datasource") or {}).get("uid") or panel_ds
            if ds == "prometheus" and isinstance(t.get("expr"), str):
                yield panel.get("title", "?"), t["expr"]


def load_dashboards(c):
    boards = {}
    files = sorted(DASHBOARDS.glob("*.json"))
    c.check(bool(files), f"no dashboard JSON in {DASHBOARDS}")
    for f in files:
        try:
            boards[f.name] = json.loads(f.read_text(encoding="utf-8"))
            c.check(True, "")
        except (OSError, ValueError) as e:
            c.check(False, f"{f.name}: not valid JSON: {e}")
    return boards


def check_dashboard(c, name, d, ds_types, families):
    where = name
    c.check(isinstance(d.get("title"), str) and d["title"].strip() != "", f"{where}: no title")
    c.check(isinstance(d.get("uid"), str) and d["uid"].strip() != "", f"{where}: no uid")
    if name in EXPECTED_DASHBOARDS:
        uid, title = EXPECTED_DASHBOARDS[name]
        c.check(d.get("uid") == uid, f"{where}: uid is {d.get('uid')!r}, want {uid!r}")
        c.check(d.get("title") == title, f"{where}: title is {d.get('title')!r}, want {title!r}")
    c.check(isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36, f"{where}: schemaVersion < 36")
    c.check(d.get("id") is None, f"{where}: provisioned dashboards carry id null")

    variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list") or []}
    for required in sorted(REQUIRED_VARIABLES):
        c.check(required in variables, f"{where}: template variable ${required} missing")
    for vname, v in variables.items():
        if v.get("type") == "query":
            vds = (v.get("datasource") or {}).get("uid")
            c.check(vds in ds_types, f"{where}: variable ${vname}: datasource uid {vds!r} is not provisioned")
            c.check(bool(v.get("definition") or v.get("query")), f"{where}: variable ${vname} has no query")
            if v.get("includeAll"):
                c.check(v.get("allValue") == ".*", f"{where}: variable ${vname}: 'All' should be .* (allValue)")
    if name == "batch-processing.json":
        bid = variables.get("batch_id") or {}
        c.check(bid.get("type") == "textbox", f"{where}: textbox variable $batch_id missing")

    ids = set()
    boxes = []
    for panel in walk_panels(d.get("panels") or []):
        ptype = panel.get("type")
        title = panel.get("title")
        pw = f"{where}: panel {title!r}"
        c.check(isinstance(title, str) and title.strip() != "", f"{where}: a {ptype} panel has no title")
        pid = panel.get("id")
        c.check(isinstance(pid, int) and pid not in ids, f"{pw}: id {pid!r} missing or not unique")
        ids.add(pid)
        gp = panel.get("gridPos") or {}
        ok = all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y"))
        c.check(ok and gp["w"] > 0 and gp["h"] > 0 and gp["x"] >= 0 and gp["x"] + gp["w"] <= 24, f"{pw}: bad gridPos {gp}")
        if ok:
            for other_title, o in boxes:
                overlap = (
                    gp["x"] < o["x"] + o["w"]
                    and o["x"] < gp["x"] + gp["w"]
                    and gp["y"] < o["y"] + o["h"]
                    and o["y"] < gp["y"] + gp["h"]
                )
                c.check(not overlap, f"{pw}: overlaps panel {other_title!r}")
            boxes.append((title, gp))
        if ptype == "row":
            continue
        c.check(ptype in VISUAL_PANEL_TYPES, f"{pw}: unexpected panel type {ptype!r}")
        desc = panel.get("description")
        c.check(isinstance(desc, str) and len(desc.strip()) >= 20, f"{pw}: no description")
        ds = (panel.get("datasource") or {}).get("uid")
        if not c.check(ds in ds_types, f"{pw}: datasource uid {ds!r} is not provisioned ({sorted(ds_types)})"):
            continue
        dstype = ds_types[ds]
        c.check(
            (panel.get("datasource") or {}).get("type") == dstype,
            f"{pw}: datasource type {(panel.get('datasource') or {}).get('type')!r}, provisioned {dstype!r}",
        )
        targets = panel.get("targets") or []
        c.check(bool(targets), f"{pw}: no targets")
        refs = [t.get("refId") for t in targets]
        c.check(len(set(refs)) == len(refs) and all(refs), f"{pw}: refIds missing or repeated")
        defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
        if dstype == "prometheus":
            c.check(bool(defaults.get("unit")), f"{pw}: no fieldConfig.defaults.unit")
            steps = (defaults.get("thresholds") or {}).get("steps")
            c.check(bool(steps), f"{pw}: no thresholds")
        for t in targets:
            tds = (t.get("datasource") or {}).get("uid", ds)
            c.check(tds == ds, f"{pw}: target {t.get('refId')} uses datasource {tds!r}, the panel {ds!r}")
            expr = t.get("expr")
            if not c.check(isinstance(expr, str) and expr.strip() != "", f"{pw}: target {t.get('refId')} has no expr"):
                continue
            used = variables_in(expr)
            for var in sorted(used):
                c.check(
                    var in variables or var.startswith("__"),
                    f"{pw}: `{expr}` uses ${var}, which the dashboard does not define",
                )
            if dstype == "prometheus":
                bad = used - PROM_VARIABLES
                c.check(not bad, f"{pw}: `{expr}` uses {sorted(bad)}; only {sorted(PROM_VARIABLES)} are substituted")
                c.check(balanced(expr), f"{pw}: `{expr}` has unbalanced brackets or quotes")
                check_selectors(c, pw, expr, families)
            elif dstype == "loki":
                c.check(expr.lstrip().startswith("{"), f"{pw}: `{expr}` is not a LogQL stream selector")
                stream = expr[: expr.find("}") + 1]
                c.check("batch_id" not in stream and "request_id" not in stream,
                        f"{pw}: `{expr}`: ids are JSON fields, never stream labels")


def check_selectors(c, pw, expr, families):
    if not families:
        return
    for series, matchers in SELECTOR.findall(expr):
        family, is_bucket = family_of(series, families)
        if not c.check(family is not None, f"{pw}: `{expr}`: {series} is no family of the README"):
            continue
        allowed = families[family] | TARGET_LABELS | ({"le"} if is_bucket else set())
        for label in MATCHER_LABEL.findall(strip_strings(matchers)):
            c.check(label in allowed, f"{pw}: `{expr}`: {family} has no label {label!r} (README: {sorted(families[family])})")


def main(argv):
    list_exprs = "--list-exprs" in argv
    c = Checker()
    boards = load_dashboards(c)

    if list_exprs:
        for name in sorted(boards):
            d = boards[name]
            for panel, expr in prom_targets(d):
                print(json.dumps({"dashboard": d.get("uid", name), "panel": panel, "expr": expr}, ensure_ascii=False))
        return 0 if not c.failures else 1

    ds_types = datasource_uids(DATASOURCES) if DATASOURCES.exists() else {}
    c.check(DATASOURCES.exists(), f"{DATASOURCES} missing")
    c.check(ds_types.get("prometheus") == "prometheus", "datasources.yml: no Prometheus datasource with uid prometheus")
    c.check(ds_types.get("loki") == "loki", "datasources.yml: no Loki datasource with uid loki")
    if DASHBOARD_PROVIDER.exists():
        provider = DASHBOARD_PROVIDER.read_text(encoding="utf-8")
        c.check("/var/lib/grafana/dashboards" in provider, "dashboards.yml: does not load /var/lib/grafana/dashboards")
    else:
        c.check(False, f"{DASHBOARD_PROVIDER} missing")

    families = readme_families(README)
    c.check(bool(families), f"{README}: no metric table in the Observability section")
    families = families or {}

    for name in sorted(EXPECTED_DASHBOARDS):
        c.check(name in boards, f"dashboard {name} missing")
    uids = [d.get("uid") for d in boards.values()]
    c.check(len(set(uids)) == len(uids), f"dashboard uids not unique: {uids}")
    for name, d in sorted(boards.items()):
        check_dashboard(c, name, d, ds_types, families)

    all_exprs = [(d.get("uid"), p, e) for d in boards.values() for p, e in prom_targets(d)]
    word = lambda name: re.compile(r"(?<![A-Za-z0-9_:])" + re.escape(name) + r"(?![A-Za-z0-9_:])")
    for family in sorted(families):
        pat = re.compile(r"(?<![A-Za-z0-9_:])" + re.escape(family) + r"(?:_bucket|_sum|_count)?(?![A-Za-z0-9_:])")
        c.check(any(pat.search(e) for _, _, e in all_exprs), f"metric family {family} appears in no panel expression")
    gpu_exprs = [e for uid, _, e in all_exprs if uid == GPU_DASHBOARD_UID]
    for series in VLLM_SERIES:
        c.check(any(word(series).search(e) for e in gpu_exprs), f"{series} appears on no panel of the GPU dashboard")

    if c.check(EXPECTED_EMPTY.exists(), f"{EXPECTED_EMPTY} missing"):
        try:
            allowed = json.loads(EXPECTED_EMPTY.read_text(encoding="utf-8"))
        except ValueError as e:
            allowed = None
            c.check(False, f"expected-empty.json: not valid JSON: {e}")
        if c.check(isinstance(allowed, dict), "expected-empty.json: not a JSON object"):
            known = {e for _, _, e in all_exprs}
            for expr, reason in allowed.items():
                c.check(expr in known, f"expected-empty.json: `{expr}` is in no dashboard (stale entry)")
                c.check(isinstance(reason, str) and reason.strip() != "", f"expected-empty.json: `{expr}` has no reason")

    for f in c.failures:
        print(f"FAIL: {f}")
    print(
        f"{len(boards)} dashboards, {sum(1 for _ in all_exprs)} Prometheus expressions, "
        f"{len(families)} README metric families covered"
        if not c.failures
        else f"{len(boards)} dashboards checked"
    )
    print(f"{c.passed} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
