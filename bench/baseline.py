#!/usr/bin/env python3
"""The saturation benchmark's baseline: what a user would write instead of a batch server.

Reads a batch input JSONL, sends every line's body to the upstream's /v1/chat/completions with
the official `openai` client (AsyncOpenAI, default settings) under an asyncio semaphore, writes
one result line per request, and prints a JSON report on stdout:
{"requests", "ok", "errors", "elapsed_seconds"} (elapsed: first request sent -> last answer).
"""

import argparse
import asyncio
import json
import time

from openai import AsyncOpenAI


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="the upstream, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()

    with open(args.input) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    client = AsyncOpenAI(base_url=args.base_url, api_key="unused")
    semaphore = asyncio.Semaphore(args.concurrency)
    results = [None] * len(lines)

    async def one(i: int, line: dict) -> bool:
        async with semaphore:
            try:
                response = await client.chat.completions.create(**line["body"])
                results[i] = {"custom_id": line["custom_id"], "response": response.model_dump(), "error": None}
                return True
            except Exception as e:  # noqa: BLE001 - a failed request is recorded, not fatal
                results[i] = {"custom_id": line["custom_id"], "response": None, "error": str(e)}
                return False

    start = time.monotonic()
    outcomes = await asyncio.gather(*(one(i, line) for i, line in enumerate(lines)))
    elapsed = time.monotonic() - start
    await client.close()

    with open(args.output, "w") as out:
        for r in results:
            out.write(json.dumps(r) + "\n")
    ok = sum(outcomes)
    print(json.dumps({"requests": len(lines), "ok": ok, "errors": len(lines) - ok, "elapsed_seconds": elapsed}))


if __name__ == "__main__":
    asyncio.run(main())
