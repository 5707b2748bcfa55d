"""Streams a chat completion through the gateway with the official `openai` SDK.

Usage: python3 openai_stream.py BASE_URL MODEL

Prints the concatenated `delta.content` of every streamed chunk, then a newline. Used by
tests/clients.rs to check that a real SDK client parses the gateway's SSE stream.
"""

import sys

from openai import OpenAI


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: openai_stream.py BASE_URL MODEL", file=sys.stderr)
        return 2
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=10.0)
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        stream=True,
    )
    text = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    print("".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
