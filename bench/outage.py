#!/usr/bin/env python3
"""An upstream outage in the middle of a batch, with vllm-batch's default flags.

Starts upstream-sim and `vllm-batch serve`, submits a batch, kills the simulator once a third of
the batch is done, keeps it down for --outage seconds (default 150), starts it again on the same
port, and reports: requests failed, how long after the upstream was back the batch's completed
count moved again, and what vllm_upstream_up / vllm_upstream_outages_total said. Standard library
only; the binaries come from --bin-dir (default target/release).

    python3 bench/outage.py --bin-dir target/debug --requests 3000 --outage 150
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, path, body=None, content_type="application/json"):
    req = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("content-type", content_type)
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
    return json.loads(data) if data[:1] in (b"{", b"[") else data.decode()


def upload(base, content):
    boundary = "outage-bench"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return call(base, "/v1/files", body, f"multipart/form-data; boundary={boundary}")["id"]


def metric(base, series):
    page = call(base, "/metrics")
    m = re.search(r"^" + re.escape(series) + r" (\S+)$", page, re.M)
    return float(m.group(1)) if m else None


def start_sim(bin_dir, port):
    return subprocess.Popen(
        [os.path.join(bin_dir, "upstream-sim"), "--port", str(port), "--max-num-seqs", "64", "--base-latency-ms", "200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--outage", type=float, default=150.0)
    args = ap.parse_args()
    sim_port, api_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="outage-bench-")
    sim = start_sim(args.bin_dir, sim_port)
    log = open(os.path.join(data, "serve.log"), "w")
    api = subprocess.Popen(
        [os.path.join(args.bin_dir, "vllm-batch"), "serve", "--data-dir", data, "--port", str(api_port),
         "--upstream", f"http://127.0.0.1:{sim_port}/v1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        for _ in range(100):
            try:
                call(base, "/health")
                break
            except OSError:
                time.sleep(0.1)
        lines = "".join(
            json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "sim-model", "messages": [{"role": "user", "content": f"q {i}"}], "max_tokens": 8}}) + "\n"
            for i in range(args.requests)
        ).encode()
        batch = call(base, "/v1/batches", json.dumps({"input_file_id": upload(base, lines),
                     "endpoint": "/v1/chat/completions", "completion_window": "24h"}).encode())
        bid = batch["id"]
        while call(base, f"/v1/batches/{bid}")["request_counts"]["completed"] < args.requests // 3:
            time.sleep(0.05)
        sim.send_signal(signal.SIGKILL)
        sim.wait()
        down_at = time.time()
        at_kill = call(base, f"/v1/batches/{bid}")["request_counts"]
        up_during = None
        while time.time() - down_at < args.outage:
            time.sleep(1)
            up_during = metric(base, 'vllm_upstream_up{upstream="0"}')
        during = call(base, f"/v1/batches/{bid}")["request_counts"]
        sim = start_sim(args.bin_dir, sim_port)
        back_at = time.time()
        base_done = during["completed"]
        resumed = None
        while True:
            b = call(base, f"/v1/batches/{bid}")
            if resumed is None and b["request_counts"]["completed"] > base_done:
                resumed = time.time() - back_at
            if b["status"] in ("completed", "failed", "expired", "cancelled"):
                break
            time.sleep(0.1)
        print(json.dumps({
            "requests": args.requests, "outage_seconds": round(back_at - down_at, 1),
            "completed_at_kill": at_kill["completed"], "failed_during_outage": during["failed"],
            "upstream_up_during_outage": up_during, "status": b["status"],
            "completed": b["request_counts"]["completed"], "failed": b["request_counts"]["failed"],
            "seconds_to_resume_after_upstream_back": round(resumed, 2) if resumed is not None else None,
            "outages_counted": metric(base, 'vllm_upstream_outages_total{upstream="0"}'),
            "down_seconds_counted": metric(base, 'vllm_upstream_down_seconds_total{upstream="0"}'),
        }, indent=1))
    finally:
        api.terminate()
        sim.kill()
        api.wait()


if __name__ == "__main__":
    main()
