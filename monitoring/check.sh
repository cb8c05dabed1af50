#!/usr/bin/env bash
# Validates the monitoring stack's configuration without running it:
#   promtool check config / check rules / test rules   (Debian: apt-get install prometheus)
#   docker-compose config                               (Debian: apt-get install docker-compose)
#   amtool check-config, when amtool is installed       (Debian: prometheus-alertmanager)
#   contract checks in Python (PyYAML, which docker-compose's Python always has): promtail's
#   labels and JSON keys, the alert/recording rule names and their unit tests, Loki's retention
#   and limits, and the compose services (pinned images, restart, healthchecks, networks).
# Installs nothing. Prints one PASS/FAIL line per check and `N passed, M failed`; exits non-zero
# on any failure. Run from anywhere: bash monitoring/check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

passed=0
failed=0
log=$(mktemp)
envfile=$(mktemp)
trap 'rm -f "$log" "$envfile"' EXIT

# check NAME COMMAND...: runs the command, shows its output only when it fails.
check() {
    local name=$1
    shift
    if "$@" >"$log" 2>&1; then
        printf 'PASS  %s\n' "$name"
        passed=$((passed + 1))
    else
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$log"
        failed=$((failed + 1))
    fi
}

missing() {
    echo "$1 is not installed ($2)"
    return 1
}

# --- Prometheus ------------------------------------------------------------------------------
if command -v promtool >/dev/null; then
    check "promtool check config monitoring/prometheus/prometheus.yml" \
        promtool check config monitoring/prometheus/prometheus.yml
    check "promtool check rules monitoring/prometheus/rules/*.yml" \
        promtool check rules monitoring/prometheus/rules/*.yml
    check "promtool test rules monitoring/prometheus/tests/*.yml" \
        promtool test rules monitoring/prometheus/tests/*.yml
else
    check "promtool" missing promtool "Debian: apt-get install prometheus"
fi

# --- docker-compose --------------------------------------------------------------------------
# The compose file requires GF_SECURITY_ADMIN_PASSWORD; take every value from .env.example and
# supply a placeholder for required ones it lacks.
if [ -f .env.example ]; then
    cat .env.example >"$envfile"
    echo >>"$envfile"
fi
grep -q '^GF_SECURITY_ADMIN_PASSWORD=.' "$envfile" || echo 'GF_SECURITY_ADMIN_PASSWORD=check-only' >>"$envfile"
if command -v docker-compose >/dev/null; then
    check "docker-compose -f docker-compose.monitoring.yml config -q" \
        docker-compose --env-file "$envfile" -f docker-compose.monitoring.yml config -q
    check "docker-compose -f docker-compose.monitoring.yml --profile gpu config -q" \
        docker-compose --env-file "$envfile" -f docker-compose.monitoring.yml --profile gpu config -q
else
    check "docker-compose" missing docker-compose "Debian: apt-get install docker-compose"
fi

# --- Alertmanager (optional) -----------------------------------------------------------------
if command -v amtool >/dev/null; then
    check "amtool check-config monitoring/alertmanager/alertmanager.yml" \
        amtool check-config monitoring/alertmanager/alertmanager.yml
else
    echo "SKIP  amtool check-config (amtool not installed; Debian: prometheus-alertmanager)"
fi

# --- Contract checks (Python + PyYAML) -------------------------------------------------------
# PyYAML is not in Python's standard library, but Debian's docker-compose is a Python program
# that depends on it, so its interpreter always has it.
PY=""
candidates=(python3 /usr/bin/python3)
if command -v docker-compose >/dev/null; then
    read -r -a shebang < <(sed -n '1s/^#!//p' "$(command -v docker-compose)") || true
    if [ "${#shebang[@]}" -gt 0 ]; then
        if [ "$(basename "${shebang[0]}")" = env ] && [ "${#shebang[@]}" -gt 1 ]; then
            candidates+=("${shebang[1]}")
        else
            candidates+=("${shebang[0]}")
        fi
    fi
fi
for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null && "$c" -c 'import yaml' 2>/dev/null; then
        PY=$c
        break
    fi
done

contract() {
    "$PY" - "$1" "$envfile" <<'PYEOF'
import glob, json, os, re, subprocess, sys
import yaml

what, envfile = sys.argv[1], sys.argv[2]
errors = []
def err(msg): errors.append(msg)
def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)

if what == "promtail":
    # Exactly the top-level keys of vllm-batch's JSON log lines; labels only job/level/service.
    keys = {"timestamp", "level", "target", "message", "service", "request_id", "batch_id", "chunk"}
    cfg = load("monitoring/promtail/promtail-config.yml")
    scs = cfg.get("scrape_configs") or []
    if not scs:
        err("no scrape_configs")
    for sc in scs:
        name = sc.get("job_name")
        if sc.get("relabel_configs"):
            err(f"{name}: relabel_configs could add labels; not expected")
        paths = set()
        for st in sc.get("static_configs") or []:
            labels = dict(st.get("labels") or {})
            paths.add(labels.pop("__path__", None))
            if labels != {"job": "vllm-batch"}:
                err(f"{name}: static labels must be exactly job: vllm-batch, got {labels}")
        for want in ("/var/log/vllm-batch/api_server.log*", "/var/log/vllm-batch/worker.log*"):
            if want not in paths:
                err(f"{name}: no static_config with __path__ {want}")
        stages = sc.get("pipeline_stages") or []
        kinds = [next(iter(s)) for s in stages]
        allowed = {"json", "labels", "labeldrop", "timestamp"}
        if set(kinds) - allowed:
            err(f"{name}: unexpected stages {sorted(set(kinds) - allowed)} (only {sorted(allowed)})")
        for kind in ("json", "labels", "timestamp"):
            if kinds.count(kind) != 1:
                err(f"{name}: expected exactly one {kind} stage, found {kinds.count(kind)}")
        for s in stages:
            kind, body = next(iter(s.items()))
            if kind == "json":
                expr = (body or {}).get("expressions") or {}
                if set(expr) != keys:
                    err(f"{name}: json expressions {sorted(expr)} != {sorted(keys)}")
                for k, v in expr.items():
                    if v not in (None, "", k):
                        err(f"{name}: json expression {k}: {v!r} should read the key {k!r}")
                if (body or {}).get("source"):
                    err(f"{name}: json stage must parse the log line itself (no source)")
            elif kind == "labels":
                if set(body or {}) != {"level", "service"}:
                    err(f"{name}: labels stage sets {sorted(body or {})}, want only level, service")
                for k, v in (body or {}).items():
                    if v not in (None, "", k):
                        err(f"{name}: label {k} should come from extracted {k!r}, not {v!r}")
            elif kind == "labeldrop":
                if "filename" not in (body or []):
                    err(f"{name}: labeldrop should drop filename")
            elif kind == "timestamp":
                if (body or {}).get("source") != "timestamp" or (body or {}).get("format") != "RFC3339Nano":
                    err(f"{name}: timestamp stage must read `timestamp` as RFC3339Nano, got {body}")
        for forbidden in ("request_id", "batch_id", "chunk"):
            if forbidden in json.dumps(stages[kinds.index("labels")] if "labels" in kinds else {}):
                err(f"{name}: {forbidden} must never be a label")
    if not any("loki:3100/loki/api/v1/push" in (c.get("url") or "") for c in cfg.get("clients") or []):
        err("clients: no push URL http://loki:3100/loki/api/v1/push")

elif what == "rules":
    # Names the dashboards and the live test rely on, and a firing + a quiet test per alert.
    recording_names = {
        "vllm_batch:requests_processed:rate5m", "vllm_batch:api_requests:rate5m",
        "vllm_batch:api_request_duration_seconds:p99_5m", "vllm_batch:upstream_error_ratio:rate5m",
        "vllm_batch:inference_duration_seconds:p50_5m", "vllm_batch:inference_duration_seconds:p99_5m",
        "vllm_batch:tokens_generated:rate5m", "vllm_batch:queue_wait_seconds:p95_15m",
        "vllm_batch:batch_failure_ratio:increase1h",
    }
    alert_names = {
        "VllmBatchApiDown", "VllmBatchWorkerHeartbeatStale", "VllmBatchNoWorkerWhileBatchesWait",
        "VllmBatchQueueStalled", "VllmBatchFailureRatioHigh", "VllmBatchUpstreamErrorRatioHigh",
        "VllmBatchApiLatencyHigh", "VllmBatchGpuMemoryHigh", "VllmBatchGpuTemperatureHigh",
        "VllmBatchHostMemoryHigh", "VllmWaitingQueueSaturated", "VllmBatchWebhookDeliveriesFailing",
        "VllmBatchWebhookDeliveryAbandoned",
    }
    records, alerts = set(), {}
    for path in sorted(glob.glob("monitoring/prometheus/rules/*.yml")):
        for g in load(path).get("groups") or []:
            for r in g.get("rules") or []:
                if "record" in r:
                    records.add(r["record"])
                else:
                    alerts[r["alert"]] = r
    for n in sorted(recording_names - records):
        err(f"recording rule {n} missing")
    for n in sorted(alert_names - set(alerts)):
        err(f"alert {n} missing")
    for n, r in sorted(alerts.items()):
        if not r.get("for"):
            err(f"{n}: no `for:`")
        if (r.get("labels") or {}).get("severity") not in ("critical", "warning"):
            err(f"{n}: severity must be critical or warning")
        ann = r.get("annotations") or {}
        for k in ("summary", "description"):
            if not (ann.get(k) or "").strip():
                err(f"{n}: no {k} annotation")
    fired, quiet = set(), set()
    for path in sorted(glob.glob("monitoring/prometheus/tests/*.yml")):
        for t in load(path).get("tests") or []:
            for a in t.get("alert_rule_test") or []:
                (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
    for n in sorted(alerts):
        if n not in fired:
            err(f"{n}: no unit test where it fires")
        if n not in quiet:
            err(f"{n}: no unit test where it stays quiet")

elif what == "prometheus":
    cfg = load("monitoring/prometheus/prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs") or []}
    want = {"vllm-batch-api", "vllm-batch-worker", "vllm", "node", "nvidia-gpu", "prometheus"}
    if set(jobs) != want:
        err(f"scrape jobs {sorted(jobs)} != {sorted(want)}")
    g = cfg.get("global") or {}
    if g.get("scrape_interval") != "15s" or g.get("evaluation_interval") != "15s":
        err("global scrape_interval and evaluation_interval must be 15s")
    # The end-to-end test rewrites the intervals to 1s; an explicit timeout above that is invalid.
    for where, block in [("global", g)] + [(j.get("job_name"), j) for j in cfg.get("scrape_configs") or []]:
        if "scrape_timeout" in block:
            err(f"{where}: leave scrape_timeout at its default (min(10s, scrape_interval))")
    for name, j in jobs.items():
        sd = [k for k in j if k.endswith("_sd_configs") or k == "static_configs"]
        if sd not in (["static_configs"], ["file_sd_configs"]):
            err(f"{name}: targets must come from one static_configs or file_sd_configs, got {sd}")
        for f in j.get("file_sd_configs") or []:
            for p in f.get("files") or []:
                if not p.startswith("targets/"):
                    err(f"{name}: file_sd file {p} is not under targets/")
                if not glob.glob(os.path.join("monitoring/prometheus", p)):
                    err(f"{name}: file_sd file {p} does not exist")
    auth = (jobs.get("vllm") or {}).get("authorization") or {}
    if auth.get("type") != "Bearer" or not auth.get("credentials_file"):
        err("vllm: needs authorization type Bearer with a credentials_file")
    else:
        token = os.path.join("monitoring/prometheus", auth["credentials_file"])
        if not os.path.isfile(token):
            err(f"vllm: credentials file {token} missing (ship it empty)")
        elif os.path.getsize(token):
            print(f"note: {token} is not empty; it is tracked by git, keep real tokens elsewhere (VLLM_METRICS_TOKEN_FILE)")

elif what == "loki":
    cfg = load("monitoring/loki/loki-config.yml")
    comp, lim = cfg.get("compactor") or {}, cfg.get("limits_config") or {}
    if comp.get("retention_enabled") is not True:
        err("compactor.retention_enabled must be true")
    if not comp.get("delete_request_store"):
        err("compactor.delete_request_store is required with retention in Loki 3")
    if lim.get("retention_period") != "720h":
        err("limits_config.retention_period must be 720h")
    if lim.get("reject_old_samples") is not True:
        err("limits_config.reject_old_samples must be true")
    for k in ("ingestion_rate_mb", "ingestion_burst_size_mb", "per_stream_rate_limit",
              "per_stream_rate_limit_burst", "max_line_size", "reject_old_samples_max_age"):
        if k not in lim:
            err(f"limits_config.{k} missing")
    for s in (cfg.get("schema_config") or {}).get("configs") or []:
        if s.get("store") != "tsdb" or s.get("schema") != "v13" or (s.get("index") or {}).get("period") != "24h":
            err(f"schema {s}: use tsdb, v13, 24h index period (compactor retention needs them)")

elif what == "compose":
    out = subprocess.run(
        ["docker-compose", "--env-file", envfile, "-f", "docker-compose.monitoring.yml",
         "--profile", "gpu", "config"], check=True, capture_output=True, text=True).stdout
    cfg = yaml.safe_load(out)
    services = cfg.get("services") or {}
    want = {"prometheus", "alertmanager", "grafana", "loki", "promtail", "node-exporter", "nvidia-gpu-exporter"}
    if set(services) != want:
        err(f"services {sorted(services)} != {sorted(want)}")
    for name, s in sorted(services.items()):
        image = s.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        if not tag or tag == "latest":
            err(f"{name}: image {image!r} is not pinned")
        if s.get("restart") != "unless-stopped":
            err(f"{name}: restart must be unless-stopped")
        if not (s.get("healthcheck") or {}).get("test"):
            err(f"{name}: no healthcheck")
        if list(s.get("networks") or {}) != ["monitoring"]:
            err(f"{name}: must be on the monitoring network only")
        for p in s.get("ports") or []:
            ip = p.get("host_ip") if isinstance(p, dict) else str(p).split(":")[0]
            if ip != "127.0.0.1":
                err(f"{name}: port {p} is not published on 127.0.0.1 by default")
    for v in ("prometheus-data", "grafana-data", "loki-data", "alertmanager-data"):
        if v not in (cfg.get("volumes") or {}):
            err(f"named volume {v} missing")
    prom = services.get("prometheus") or {}
    cmd = " ".join(prom.get("command") or [])
    for flag in ("--storage.tsdb.retention.time=30d", "--web.enable-lifecycle"):
        if flag not in cmd:
            err(f"prometheus: {flag} missing")
    if "host.docker.internal:host-gateway" not in (prom.get("extra_hosts") or []):
        err("prometheus: extra_hosts host.docker.internal:host-gateway missing")
    gpu = services.get("nvidia-gpu-exporter") or {}
    if gpu.get("profiles") != ["gpu"]:
        err("nvidia-gpu-exporter: must be in profile gpu only")
    devices = (((gpu.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    if not any("gpu" in (d.get("capabilities") or []) for d in devices):
        err("nvidia-gpu-exporter: no GPU device reservation")
    graf = services.get("grafana") or {}
    env = graf.get("environment") or {}
    if env.get("PROMETHEUS_URL") != "http://prometheus:9090" or env.get("LOKI_URL") != "http://loki:3100":
        err("grafana: PROMETHEUS_URL / LOKI_URL wrong")
    mounts = {str(v).split(":")[1] if not isinstance(v, dict) else v.get("target") for v in graf.get("volumes") or []}
    for t in ("/etc/grafana/provisioning", "/var/lib/grafana/dashboards"):
        if t not in mounts:
            err(f"grafana: nothing mounted at {t}")
    # Every variable the compose file reads should be in .env.example (informational).
    text = open("docker-compose.monitoring.yml", encoding="utf-8").read()
    used = sorted(set(re.findall(r"\$\{([A-Z0-9_]+)", text)))
    example = open(".env.example", encoding="utf-8").read() if os.path.exists(".env.example") else ""
    absent = [v for v in used if not re.search(rf"^#?\s*{v}=", example, re.M)]
    if absent:
        print("note: .env.example does not mention " + ", ".join(absent))

else:
    err(f"unknown check {what}")

for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PYEOF
}

if [ -n "$PY" ]; then
    check "prometheus.yml: job names and target files" contract prometheus
    check "rules: contract names, alert fields, a firing and a quiet test per alert" contract rules
    check "promtail: JSON keys, labels only job/level/service, RFC3339Nano timestamp" contract promtail
    check "loki: retention 720h, compactor retention, ingestion limits, tsdb v13" contract loki
    if command -v docker-compose >/dev/null; then
        check "compose: pinned images, restart, healthchecks, network, volumes, ports" contract compose
        if grep -q '^note:' "$log"; then sed 's/^/      /' "$log"; fi
    fi
else
    check "contract checks" missing "Python with PyYAML" "Debian: apt-get install python3-yaml (docker-compose brings it)"
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
