"""Calls a chat completion through the gateway with the official `openai` SDK and prints what the
SDK parsed, as JSON, so the Rust test can assert on it.

Usage: python3 openai_chunks.py BASE_URL MODEL stream|json

stream: one line per streamed chunk (`chunk.model_dump_json()`), then a last line
        `{"text": <concatenated delta.content>}`.
json:   one line, the non-streamed completion (`completion.model_dump_json()`).

Used by tests/masking_e2e.rs.
"""

import json
import sys

from openai import OpenAI


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[3] not in ("stream", "json"):
        print("usage: openai_chunks.py BASE_URL MODEL stream|json", file=sys.stderr)
        return 2
    base_url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    client = OpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=10.0)
    messages = [{"role": "user", "content": "Who do I contact?"}]
    if mode == "json":
        completion = client.chat.completions.create(model=model, messages=messages)
        print(completion.model_dump_json())
        return 0
    stream = client.chat.completions.create(model=model, messages=messages, stream=True)
    text = []
    for chunk in stream:
        print(chunk.model_dump_json(), flush=True)
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    print(json.dumps({"text": "".join(text)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
