"""The client side of the real-vLLM tests (tests/vllm/main.rs): the official `openai` Python
package, unmodified, submits one batch to vllm-batch and reports what a user gets back.

    client.py submit INPUT.jsonl ENDPOINT      uploads, creates the batch, prints its id
    client.py wait BATCH_ID [TIMEOUT_S]        polls until the batch ends, downloads its files,
                                               prints {"batch": …, "output": […], "errors": […]}

Environment: OPENAI_BASE_URL (e.g. http://127.0.0.1:8080/v1), OPENAI_API_KEY (any string).
Everything printed is JSON on one line; the Rust test asserts on it.
"""

import json
import sys
import time

from openai import OpenAI

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def submit(client, path, endpoint):
    with open(path, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h")
    print(json.dumps({"id": batch.id, "status": batch.status}), flush=True)


def wait(client, batch_id, timeout_s):
    deadline = time.monotonic() + timeout_s
    batch = client.batches.retrieve(batch_id)
    while batch.status not in TERMINAL:
        if time.monotonic() > deadline:
            sys.exit(f"batch {batch_id} still {batch.status} after {timeout_s} s: {batch.model_dump_json()}")
        time.sleep(1)
        batch = client.batches.retrieve(batch_id)
    output = lines(client.files.content(batch.output_file_id).text) if batch.output_file_id else []
    errors = lines(client.files.content(batch.error_file_id).text) if batch.error_file_id else []
    print(json.dumps({"batch": batch.model_dump(), "output": output, "errors": errors}), flush=True)


def main():
    client = OpenAI()
    command = sys.argv[1]
    if command == "submit":
        submit(client, sys.argv[2], sys.argv[3])
    elif command == "wait":
        wait(client, sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 600)
    else:
        sys.exit(f"unknown command {command!r}: submit or wait")


if __name__ == "__main__":
    main()
