"""Webhooks with the official `openai` Python package, unmodified: manages endpoints through
`client.webhooks.*` (create, retrieve, list with pagination, update, test, rotate_secret,
delete, `event_types.list()`), receives events on a receiver of its own (http.server in a
thread) and checks them with `client.webhooks.unwrap` — the right secret accepts, a wrong one
raises `InvalidWebhookSignatureError`.

Environment: OPENAI_BASE_URL, OPENAI_API_KEY (any string), SIM_MODEL (default "sim-model").
The server must be started with `--webhook-allow-http` (the receiver is plain HTTP on loopback).
Prints one line per check and closes with "N passed, M failed"; exits non-zero on any failure.
"""

import http.server
import io
import json
import os
import sys
import threading
import time

import openai
from openai import OpenAI, InvalidWebhookSignatureError

MODEL = os.environ.get("SIM_MODEL", "sim-model")
TYPES = ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok    {name}", flush=True)
    else:
        failed += 1
        print(f"  FAIL  {name}{': ' + str(detail) if detail != '' else ''}", flush=True)


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records every POST (body and headers) and answers 204."""

    received = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with Receiver.lock:
            Receiver.received.append((body, dict(self.headers.items())))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_for(pred, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with Receiver.lock:
            got = [r for r in Receiver.received if pred(r)]
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"receiver: no {what} within {timeout}s")


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    client = OpenAI()

    types = client.webhooks.event_types.list()
    check("event_types.list() is the four batch.* types", types.object == "list" and sorted(types.data) == sorted(TYPES), types)

    ep = client.webhooks.create(name="first", url=hook, event_types=["batch.completed", "batch.cancelled"])
    check("create returns a webhook_endpoint", ep.object == "webhook_endpoint" and ep.id.startswith("we_"), ep)
    check("create shows the signing secret once (whsec_…)", ep.signing_secret.startswith("whsec_"))
    check("create sets created_at and updated_at", isinstance(ep.created_at, int) and ep.updated_at == ep.created_at, ep)
    check("create keeps name, url and event types", (ep.name, ep.url, ep.event_types) == ("first", hook, ["batch.completed", "batch.cancelled"]), ep)
    secret = ep.signing_secret

    got = client.webhooks.retrieve(ep.id)
    check("retrieve hides the secret, shows a hint", "signing_secret" not in got.model_fields_set and (got.signing_secret_hint or "").startswith("whsec_") and secret[-4:] in got.signing_secret_hint, got)

    others = [client.webhooks.create(name=f"extra{i}", url=hook, event_types=["batch.failed"]) for i in range(3)]
    page = client.webhooks.list(limit=2)
    check("list pages newest first", [e.id for e in page.data] == [others[2].id, others[1].id] and page.has_more, page)
    every = [e.id for e in client.webhooks.list(limit=2)]
    check("list auto-pagination sees every endpoint", every == [others[2].id, others[1].id, others[0].id, ep.id], every)

    time.sleep(1.1)
    same = client.webhooks.update(ep.id, name="first")
    check("an unchanged update keeps updated_at", same.updated_at == ep.updated_at, same)
    upd = client.webhooks.update(ep.id, name="renamed", event_types=TYPES)
    check("update changes name and event types", upd.name == "renamed" and upd.event_types == TYPES, upd)
    check("update advances updated_at", upd.updated_at > ep.updated_at, upd)

    try:
        client.webhooks.create(name="bad", url=hook, event_types=["response.completed"])
        check("an unsupported event type is refused", False, "accepted")
    except openai.BadRequestError as e:
        check("an unsupported event type is a 400 naming it", "response.completed" in str(e) and e.body.get("param") == "event_types", e)

    result = client.webhooks.test(ep.id, event_type="batch.failed")
    check("test answers webhook_endpoint.test with the receiver's status", (result.object, result.webhook_endpoint_id, result.event_type, result.status_code, result.success) == ("webhook_endpoint.test", ep.id, "batch.failed", 204, True), result)
    body, headers = wait_for(lambda r: json.loads(r[0])["type"] == "batch.failed", "test event")[-1]
    event = client.webhooks.unwrap(body, headers, secret=secret)
    check("unwrap accepts the test event with the secret", event.type == "batch.failed" and event.data.id.startswith("batch_"), event)
    try:
        client.webhooks.unwrap(body, headers, secret="whsec_" + "QUJD" * 11)
        check("unwrap refuses a wrong secret", False, "accepted")
    except InvalidWebhookSignatureError:
        check("unwrap refuses a wrong secret", True)

    # A batch that completes sends batch.completed, which unwrap accepts.
    lines = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}]}}) + "\n" for i in range(3))
    f = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    body, headers = wait_for(lambda r: json.loads(r[0])["data"]["id"] == batch.id, "batch.completed event")[0]
    event = client.webhooks.unwrap(body, headers, secret=secret)
    check("batch.completed arrives and unwraps", event.type == "batch.completed" and event.data.id == batch.id and event.object == "event", event)
    check("the batch is completed", client.batches.retrieve(batch.id).status == "completed")

    rotated = client.webhooks.rotate_secret(ep.id)
    check("rotate_secret returns a new secret", rotated.signing_secret.startswith("whsec_") and rotated.signing_secret != secret, rotated.id)
    client.webhooks.test(ep.id, event_type="batch.expired")
    body, headers = wait_for(lambda r: json.loads(r[0])["type"] == "batch.expired", "test event after rotation")[-1]
    client.webhooks.unwrap(body, headers, secret=rotated.signing_secret)
    check("the new secret verifies", True)
    try:
        client.webhooks.unwrap(body, headers, secret=secret)
        check("the old secret no longer verifies", False, "accepted")
    except InvalidWebhookSignatureError:
        check("the old secret no longer verifies", True)

    kept = client.webhooks.rotate_secret(ep.id, keep_old_secret_active_for_24_hours=True)
    # Long enough not to finish before the cancel (the test's simulator runs 2 requests at a time).
    many = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}]}}) + "\n" for i in range(100))
    cancel_file = client.files.create(file=("in.jsonl", io.BytesIO(many.encode())), purpose="batch")
    cancelled = client.batches.create(input_file_id=cancel_file.id, endpoint="/v1/chat/completions", completion_window="24h")
    client.batches.cancel(cancelled.id)
    body, headers = wait_for(lambda r: json.loads(r[0])["data"]["id"] == cancelled.id, "batch.cancelled event")[0]
    for label, s in [("new", kept.signing_secret), ("previous", rotated.signing_secret)]:
        event = client.webhooks.unwrap(body, headers, secret=s)
        check(f"with keep_old_secret_active_for_24_hours the {label} secret verifies", event.type == "batch.cancelled", event)

    deleted = client.webhooks.delete(ep.id)
    check("delete answers webhook_endpoint.deleted", (deleted.id, deleted.object, deleted.deleted) == (ep.id, "webhook_endpoint.deleted", True), deleted)
    try:
        client.webhooks.retrieve(ep.id)
        check("a deleted endpoint is gone", False, "still there")
    except openai.NotFoundError:
        check("a deleted endpoint is gone", True)
    for e in others:
        client.webhooks.delete(e.id)
    check("list is empty after deleting everything", list(client.webhooks.list()) == [])


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
