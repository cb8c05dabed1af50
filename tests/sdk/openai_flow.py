"""OpenAI SDK conformance: drives vllm-batch's Files and Batches API with the official `openai`
Python package, unmodified, the way a user would.

Environment: OPENAI_BASE_URL (e.g. http://127.0.0.1:8080/v1), OPENAI_API_KEY (any string),
SIM_MODEL (default "sim-model"; the upstream must echo chat prompts as "echo: <prompt>").

Every field the script reads is asserted, including that the server actually sent it (the SDK
builds its models without validation, so a missing field would otherwise pass as None). Prints
one line per check and closes with "N passed, M failed"; exits non-zero on any failure.
"""

import json
import os
import sys
import time
import traceback

import openai
from openai import OpenAI

MODEL = os.environ.get("SIM_MODEL", "sim-model")
POLL_TIMEOUT_S = 120
TERMINAL = {"completed", "failed", "expired", "cancelled"}
BATCH_STAMPS = ["in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at"]

passed = 0
failed = 0


class StepFailed(Exception):
    pass


def check(name, ok, detail=""):
    """Records one check; a failed check aborts the current step."""
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok    {name}", flush=True)
    else:
        failed += 1
        print(f"  FAIL  {name}{': ' + str(detail) if detail != '' else ''}", flush=True)
        raise StepFailed(name)


def field(obj, name, kind, label=None):
    """Asserts that the server sent `name` on `obj` with a value of type `kind`; returns it."""
    label = label or f"{type(obj).__name__}.{name}"
    sent = name in obj.model_fields_set
    value = getattr(obj, name, None)
    check(f"{label} present and {kind_name(kind)}", sent and isinstance(value, kind), f"sent={sent} value={value!r}")
    return value


def kind_name(kind):
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def null_field(obj, name, label=None):
    """Asserts that `name` is null or absent on `obj`."""
    label = label or f"{type(obj).__name__}.{name}"
    value = getattr(obj, name, None)
    check(f"{label} is null", value is None, repr(value))


def recent_stamp(obj, name, label=None):
    value = field(obj, name, int, label)
    now = time.time()
    check(f"{label or name} is a recent unix time", now - 3600 < value <= now + 60, value)
    return value


def chat_lines(n, prefix):
    """A batch input of `n` chat requests; returns (jsonl bytes, {custom_id: prompt})."""
    prompts = {}
    lines = []
    for i in range(n):
        custom_id = f"{prefix}-{i}"
        prompt = f"{prefix} prompt {i}"
        prompts[custom_id] = prompt
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
        lines.append(json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}))
    return ("\n".join(lines) + "\n").encode(), prompts


def check_file(f, label, *, file_id=None, size=None, filename=None, purpose=None):
    fid = field(f, "id", str, f"{label}.id")
    check(f"{label}.id starts with 'file-'", fid.startswith("file-"), fid)
    if file_id is not None:
        check(f"{label}.id is {file_id}", fid == file_id, fid)
    check(f"{label}.object is 'file'", field(f, "object", str, f"{label}.object") == "file")
    n = field(f, "bytes", int, f"{label}.bytes")
    if size is not None:
        check(f"{label}.bytes == {size}", n == size, n)
    name = field(f, "filename", str, f"{label}.filename")
    if filename is not None:
        check(f"{label}.filename == {filename!r}", name == filename, name)
    p = field(f, "purpose", str, f"{label}.purpose")
    if purpose is not None:
        check(f"{label}.purpose == {purpose!r}", p == purpose, p)
    recent_stamp(f, "created_at", f"{label}.created_at")
    status = field(f, "status", str, f"{label}.status")
    check(f"{label}.status is one of the SDK's values", status in ("uploaded", "processed", "error"), status)
    return fid


def upload(client, data, filename):
    return client.files.create(file=(filename, data, "application/jsonl"), purpose="batch")


def create_batch(client, file_id, metadata=None):
    kwargs = {"metadata": metadata} if metadata is not None else {}
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", **kwargs
    )


def wait_terminal(client, batch_id, label):
    deadline = time.time() + POLL_TIMEOUT_S
    seen = []
    while True:
        b = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != b.status:
            seen.append(b.status)
        if b.status in TERMINAL:
            print(f"  ..    {label} statuses seen while polling: {' -> '.join(seen)}", flush=True)
            return b
        if time.time() > deadline:
            check(f"{label} reaches a terminal status within {POLL_TIMEOUT_S}s", False, f"last status {b.status}")
        time.sleep(0.2)


def check_usage(b, label):
    usage = field(b, "usage", openai.types.BatchUsage, f"{label}.usage")
    i = field(usage, "input_tokens", int, f"{label}.usage.input_tokens")
    o = field(usage, "output_tokens", int, f"{label}.usage.output_tokens")
    t = field(usage, "total_tokens", int, f"{label}.usage.total_tokens")
    check(f"{label}.usage.total_tokens == input + output", t == i + o, (i, o, t))
    itd = field(usage, "input_tokens_details", object, f"{label}.usage.input_tokens_details")
    field(itd, "cached_tokens", int, f"{label}.usage.input_tokens_details.cached_tokens")
    otd = field(usage, "output_tokens_details", object, f"{label}.usage.output_tokens_details")
    field(otd, "reasoning_tokens", int, f"{label}.usage.output_tokens_details.reasoning_tokens")
    return i, o


def check_counts(b, label, total, completed, failed_n):
    counts = field(b, "request_counts", openai.types.BatchRequestCounts, f"{label}.request_counts")
    for name, want in (("total", total), ("completed", completed), ("failed", failed_n)):
        got = field(counts, name, int, f"{label}.request_counts.{name}")
        check(f"{label}.request_counts.{name} == {want}", got == want, got)


def read_jsonl(client, file_id, label):
    content = client.files.content(file_id)
    text = content.text
    meta = client.files.retrieve(file_id)
    check(f"{label} file size matches its bytes field", meta.bytes == len(content.content), (meta.bytes, len(content.content)))
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return lines, meta


def check_output_line(line, prompts, label):
    cid = line.get("custom_id")
    check(f"{label} line custom_id {cid!r} is one of the inputs", cid in prompts, cid)
    check(f"{label} {cid} id starts with 'batch_req_'", str(line.get("id", "")).startswith("batch_req_"), line.get("id"))
    check(f"{label} {cid} error is null", "error" in line and line["error"] is None, line.get("error"))
    resp = line.get("response") or {}
    check(f"{label} {cid} response.status_code == 200", resp.get("status_code") == 200, resp.get("status_code"))
    check(f"{label} {cid} response.request_id is a string", isinstance(resp.get("request_id"), str), resp.get("request_id"))
    body = resp.get("body") or {}
    content = ((body.get("choices") or [{}])[0].get("message") or {}).get("content")
    want = "echo: " + prompts[cid]
    check(f"{label} {cid} content == {want!r}", content == want, content)
    usage = body.get("usage") or {}
    check(f"{label} {cid} body.usage has integer token counts",
          isinstance(usage.get("prompt_tokens"), int) and isinstance(usage.get("completion_tokens"), int), usage)
    return cid, usage["prompt_tokens"], usage["completion_tokens"]


class Flow:
    def __init__(self, client):
        self.client = client
        self.input_id = None
        self.input_data, self.prompts = chat_lines(5, "sdk")
        self.batch_id = None
        self.batch = None

    # 1. Files: create, retrieve, list.
    def files_create(self):
        f = upload(self.client, self.input_data, "sdk-input.jsonl")
        self.input_id = check_file(f, "files.create", size=len(self.input_data), filename="sdk-input.jsonl", purpose="batch")

    def files_retrieve(self):
        f = self.client.files.retrieve(self.input_id)
        check_file(f, "files.retrieve", file_id=self.input_id, size=len(self.input_data), filename="sdk-input.jsonl", purpose="batch")

    def files_list(self):
        page = self.client.files.list(purpose="batch")
        check("files.list(purpose=batch).object is 'list'", getattr(page, "object", None) == "list", getattr(page, "object", None))
        ids = [f.id for f in page.data]
        check("files.list(purpose=batch) contains the upload", self.input_id in ids, ids)
        purposes = {f.purpose for f in page.data}
        check("files.list(purpose=batch) holds only batch files", purposes == {"batch"}, purposes)
        other = self.client.files.list(purpose="batch_output")
        check("files.list(purpose=batch_output) omits the upload", self.input_id not in [f.id for f in other.data])

    # 2. Batches: create, poll, results.
    def batches_create(self):
        b = create_batch(self.client, self.input_id, {"suite": "sdk"})
        self.batch_id = field(b, "id", str, "batches.create.id")
        check("batches.create.id starts with 'batch_'", self.batch_id.startswith("batch_"), self.batch_id)
        check("batches.create.object is 'batch'", field(b, "object", str, "batches.create.object") == "batch")
        check("batches.create.status is 'validating'", field(b, "status", str, "batches.create.status") == "validating", b.status)
        check("batches.create.input_file_id echoed", field(b, "input_file_id", str, "batches.create.input_file_id") == self.input_id)
        check("batches.create.endpoint echoed", field(b, "endpoint", str, "batches.create.endpoint") == "/v1/chat/completions")
        check("batches.create.completion_window echoed", field(b, "completion_window", str, "batches.create.completion_window") == "24h")
        check("batches.create.metadata echoed", field(b, "metadata", dict, "batches.create.metadata") == {"suite": "sdk"}, b.metadata)
        created = recent_stamp(b, "created_at", "batches.create.created_at")
        expires = field(b, "expires_at", int, "batches.create.expires_at")
        check("batches.create.expires_at == created_at + 24h", expires == created + 86400, (created, expires))
        for stamp in BATCH_STAMPS:
            null_field(b, stamp, f"batches.create.{stamp}")
        null_field(b, "output_file_id", "batches.create.output_file_id")
        null_field(b, "error_file_id", "batches.create.error_file_id")

    def batches_poll(self):
        b = wait_terminal(self.client, self.batch_id, "batch")
        self.batch = b
        check("batch.status is 'completed'", b.status == "completed", f"{b.status}; errors={b.errors}")
        check("batch.id unchanged", b.id == self.batch_id)
        check("batch.metadata still echoed", b.metadata == {"suite": "sdk"}, b.metadata)
        check("batch.model is the input's model", field(b, "model", str, "batch.model") == MODEL, b.model)
        check_counts(b, "batch", len(self.prompts), len(self.prompts), 0)
        created = field(b, "created_at", int, "batch.created_at")
        t_prog = recent_stamp(b, "in_progress_at", "batch.in_progress_at")
        t_fin = recent_stamp(b, "finalizing_at", "batch.finalizing_at")
        t_done = recent_stamp(b, "completed_at", "batch.completed_at")
        check("created_at <= in_progress_at <= finalizing_at <= completed_at", created <= t_prog <= t_fin <= t_done,
              (created, t_prog, t_fin, t_done))
        for stamp in ("failed_at", "expired_at", "cancelling_at", "cancelled_at"):
            null_field(b, stamp, f"batch.{stamp}")
        i, o = check_usage(b, "batch")
        check("batch.usage counts tokens", i > 0 and o > 0, (i, o))
        out = field(b, "output_file_id", str, "batch.output_file_id")
        check("batch.output_file_id starts with 'file-'", out.startswith("file-"), out)
        null_field(b, "error_file_id", "batch.error_file_id")
        check("batch.errors is null", b.errors is None, b.errors)

    def batch_output(self):
        lines, meta = read_jsonl(self.client, self.batch.output_file_id, "output")
        check("output file purpose is 'batch_output'", meta.purpose == "batch_output", meta.purpose)
        check("output file listed under purpose=batch_output",
              meta.id in [f.id for f in self.client.files.list(purpose="batch_output").data])
        check(f"output has {len(self.prompts)} lines", len(lines) == len(self.prompts), len(lines))
        seen = []
        usage_in = usage_out = 0
        for line in lines:
            cid, pi, po = check_output_line(line, self.prompts, "output")
            seen.append(cid)
            usage_in += pi
            usage_out += po
        check("every custom_id appears exactly once", sorted(seen) == sorted(self.prompts), sorted(seen))
        check("batch.usage sums the output lines' usage",
              (self.batch.usage.input_tokens, self.batch.usage.output_tokens) == (usage_in, usage_out),
              ((self.batch.usage.input_tokens, self.batch.usage.output_tokens), (usage_in, usage_out)))

    # 2b. A batch of OpenAI Responses API requests (`/v1/responses`).
    def responses_batch(self):
        prompts = {f"resp-{i}": f"responses prompt {i}" for i in range(3)}
        lines = [
            json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/responses",
                        "body": {"model": MODEL, "input": [{"role": "user", "content": p}], "max_output_tokens": 6}})
            for cid, p in prompts.items()
        ]
        fid = upload(self.client, ("\n".join(lines) + "\n").encode(), "responses.jsonl").id
        b = self.client.batches.create(input_file_id=fid, endpoint="/v1/responses", completion_window="24h")
        check("batches.create(endpoint='/v1/responses') echoes it", b.endpoint == "/v1/responses", b.endpoint)
        b = wait_terminal(self.client, b.id, "responses batch")
        check("responses batch completed", b.status == "completed", f"{b.status}; errors={b.errors}")
        check_counts(b, "responses batch", 3, 3, 0)
        null_field(b, "error_file_id", "responses batch.error_file_id")
        lines, _ = read_jsonl(self.client, b.output_file_id, "responses output")
        check("responses output has 3 lines", len(lines) == 3, len(lines))
        usage_in = usage_out = 0
        for line in lines:
            cid = line.get("custom_id")
            check(f"{cid} is one of the input's custom_ids", cid in prompts, cid)
            check(f"{cid} status_code is 200", line["response"]["status_code"] == 200, line["response"])
            # The SDK's own Response type parses the answer.
            r = openai.types.responses.Response.model_validate(line["response"]["body"])
            check(f"{cid} body is a response object", r.object == "response", r.object)
            check(f"{cid} output_text echoes its prompt", r.output_text == "echo: " + prompts[cid], r.output_text)
            check(f"{cid} usage in the Responses API's names", r.usage.input_tokens > 0 and r.usage.output_tokens > 0,
                  r.usage)
            usage_in += r.usage.input_tokens
            usage_out += r.usage.output_tokens
        i, o = check_usage(b, "responses batch")
        check("responses batch.usage sums the answers' input/output tokens", (i, o) == (usage_in, usage_out),
              ((i, o), (usage_in, usage_out)))

    # 3. Listing batches with cursor pagination.
    def batches_list(self):
        data, _ = chat_lines(1, "page")
        fid = upload(self.client, data, "page.jsonl").id
        created = [create_batch(self.client, fid).id for _ in range(3)]
        print(f"  ..    created {created}", flush=True)
        first = self.client.batches.list(limit=1)
        check("batches.list(limit=1).data has one batch", len(first.data) == 1, len(first.data))
        check("batches.list(limit=1).has_more is True", first.has_more is True, first.has_more)
        check("batches.list(limit=1) starts with the newest batch", first.data[0].id == created[-1], first.data[0].id)
        check("batches.list items are Batch objects", isinstance(first.data[0], openai.types.Batch))
        # Follow the cursor by hand: after = last id of the page, until has_more is False.
        manual = [first.data[0].id]
        page = first
        while page.has_more:
            check(f"page {len(manual)} reports a next page", page.has_next_page())
            page = self.client.batches.list(limit=1, after=page.data[-1].id)
            check(f"page after {manual[-1]} has one batch", len(page.data) == 1, len(page.data))
            check(f"page after {manual[-1]} has_more is a bool", isinstance(page.has_more, bool), page.has_more)
            manual.append(page.data[0].id)
            if len(manual) > 1000:
                check("manual paging ends", False, "over 1000 pages")
        check("the last page reports no next page", not page.has_next_page())
        check("manual paging visits every batch once", len(manual) == len(set(manual)), manual)
        want = created[::-1] + [self.batch_id]
        check("manual paging visits the created batches, newest first",
              [i for i in manual if i in want] == want, manual)
        # get_next_page() from the SDK's page object.
        second = first.get_next_page()
        check("first page's get_next_page() gives the second batch", second.data[0].id == manual[1], second.data[0].id)
        # Auto-pagination across all pages.
        auto = [b.id for b in self.client.batches.list(limit=1)]
        check("auto-pagination visits the same batches as manual paging", auto == manual, (auto, manual))
        check("auto-pagination visits every created batch", set(want) <= set(auto), auto)
        for bid in created:
            b = wait_terminal(self.client, bid, bid)
            check(f"{bid} completed", b.status == "completed", b.status)

    # 4. Cancelling a running batch.
    def batches_cancel(self):
        data, prompts = chat_lines(3000, "cancel")
        fid = upload(self.client, data, "cancel.jsonl").id
        b = create_batch(self.client, fid)
        # Cancel once requests are flowing, so the cancel has to stop a running batch.
        deadline = time.time() + POLL_TIMEOUT_S
        while b.status == "validating" and time.time() < deadline:
            time.sleep(0.02)
            b = self.client.batches.retrieve(b.id)
        check("3000-line batch is in_progress before the cancel", b.status == "in_progress", b.status)
        c = self.client.batches.cancel(b.id)
        check("batches.cancel returns the batch", c.id == b.id, c.id)
        check("batches.cancel.status is 'cancelling' or 'cancelled'", c.status in ("cancelling", "cancelled"), c.status)
        recent_stamp(c, "cancelling_at", "batches.cancel.cancelling_at")
        b = wait_terminal(self.client, b.id, "cancelled batch")
        check("cancelled batch status is 'cancelled'", b.status == "cancelled", b.status)
        t_cing = recent_stamp(b, "cancelling_at", "cancelled batch.cancelling_at")
        t_cd = recent_stamp(b, "cancelled_at", "cancelled batch.cancelled_at")
        check("cancelling_at <= cancelled_at", t_cing <= t_cd, (t_cing, t_cd))
        for stamp in ("completed_at", "failed_at", "expired_at"):
            null_field(b, stamp, f"cancelled batch.{stamp}")
        out_lines = []
        if b.output_file_id is not None:
            out_lines, _ = read_jsonl(self.client, b.output_file_id, "cancelled output")
        err_id = field(b, "error_file_id", str, "cancelled batch.error_file_id")
        err_lines, _ = read_jsonl(self.client, err_id, "cancelled errors")
        print(f"  ..    {len(out_lines)} sent before the cancel, {len(err_lines)} cancelled", flush=True)
        check_counts(b, "cancelled batch", 3000, len(out_lines), len(err_lines))
        check_usage(b, "cancelled batch")
        seen = [line.get("custom_id") for line in out_lines + err_lines]
        check("output + error files hold every custom_id exactly once",
              len(seen) == 3000 and set(seen) == set(prompts), (len(seen), len(set(seen))))
        for line in out_lines:
            cid = line["custom_id"]
            content = line["response"]["body"]["choices"][0]["message"]["content"]
            if line.get("error") is not None or content != "echo: " + prompts[cid]:
                check(f"output line {cid} is the echo of its prompt", False, line)
        check(f"all {len(out_lines)} output lines are echoes of their own prompts", True)
        codes = {}
        for line in err_lines:
            code = (line.get("error") or {}).get("code")
            codes[code] = codes.get(code, 0) + 1
            if not str(line.get("id", "")).startswith("batch_req_") or not (line["error"].get("message")):
                check(f"error line {line.get('custom_id')} has id and message", False, line)
        check("cancel stopped some requests", len(err_lines) > 0, len(err_lines))
        check("every error line has code 'batch_cancelled'", set(codes) == {"batch_cancelled"}, codes)

    # 5. Errors surface as the SDK's exception types.
    def errors(self):
        try:
            self.client.batches.create(input_file_id=self.input_id, endpoint="/v1/images", completion_window="24h")
            check("endpoint /v1/images raises openai.BadRequestError", False, "no exception")
        except openai.BadRequestError as e:
            check("endpoint /v1/images raises openai.BadRequestError", True)
            check("BadRequestError.status_code == 400", e.status_code == 400, e.status_code)
            check("BadRequestError.type is 'invalid_request_error'", e.type == "invalid_request_error", e.type)
            check("BadRequestError.param is 'endpoint'", e.param == "endpoint", e.param)
            check("BadRequestError message is not empty", isinstance(e.body, dict) and bool(e.body.get("message")), e.body)
        try:
            self.client.batches.retrieve("batch_doesnotexist")
            check("unknown batch raises openai.NotFoundError", False, "no exception")
        except openai.NotFoundError as e:
            check("unknown batch raises openai.NotFoundError", e.status_code == 404, e.status_code)

    # 6. Deleting a file.
    def files_delete(self):
        d = self.client.files.delete(self.input_id)
        check("files.delete.deleted is True", field(d, "deleted", bool, "files.delete.deleted") is True)
        check("files.delete.id is the file", field(d, "id", str, "files.delete.id") == self.input_id, d.id)
        check("files.delete.object is 'file'", field(d, "object", str, "files.delete.object") == "file", d.object)
        try:
            self.client.files.retrieve(self.input_id)
            check("files.retrieve of a deleted file raises openai.NotFoundError", False, "no exception")
        except openai.NotFoundError as e:
            check("files.retrieve of a deleted file raises openai.NotFoundError", e.status_code == 404, e.status_code)
        ids = [f.id for f in self.client.files.list(purpose="batch").data]
        check("files.list no longer shows the deleted file", self.input_id not in ids)


def main():
    base_url = os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        print("OPENAI_BASE_URL is not set (e.g. http://127.0.0.1:8080/v1)", file=sys.stderr)
        return 2
    print(f"openai {openai.__version__} against {base_url}, model {MODEL}", flush=True)
    # No SDK retries: a 5xx or 429 must show up here, not be papered over.
    client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "sk-test"), max_retries=0, timeout=60)
    flow = Flow(client)
    steps = [
        ("files.create", flow.files_create),
        ("files.retrieve", flow.files_retrieve),
        ("files.list", flow.files_list),
        ("batches.create", flow.batches_create),
        ("batches.retrieve until terminal", flow.batches_poll),
        ("files.content of the output", flow.batch_output),
        ("a /v1/responses batch", flow.responses_batch),
        ("batches.list pagination", flow.batches_list),
        ("batches.cancel", flow.batches_cancel),
        ("error types", flow.errors),
        ("files.delete", flow.files_delete),
    ]
    global failed
    for name, step in steps:
        print(f"== {name}", flush=True)
        try:
            step()
        except StepFailed:
            break
        except Exception:
            failed += 1
            print(f"  FAIL  {name} raised:", flush=True)
            traceback.print_exc(file=sys.stdout)
            break
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
