#!/usr/bin/env python3
"""A real KServe v2 / Triton gRPC client (tritonclient.grpc) for the tests.

Prints exactly one JSON line on stdout, and exits 0 whenever a call fails with an
InferenceServerException, so a test can inspect the gRPC status:
  unary  {"ok": true, "output": "...", "metadata": {...}}
  stream {"ok": true, "outputs": ["..#1", "..#2", "..#3"]}
         or {"ok": false, "error": "...", "status": "StatusCode.X" or null, "message": "..."}
  load   {"ok": true}
  live   {"ok": true, "live": true}
  error  {"ok": false, "status": "StatusCode.UNAUTHENTICATED", "message": "..."}

  python3 triton_grpc_client.py --url 127.0.0.1:PORT [--token T] --model echo --mode unary
"""
import argparse
import json
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

STREAM_RESPONSES = 3


def make_input(text):
    inp = grpcclient.InferInput("INPUT0", [1], "BYTES")
    # set_data_from_numpy sends BYTES as raw_input_contents (length-prefixed elements).
    inp.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    return inp


def first_str(result, name):
    value = result.as_numpy(name)
    if value is None:
        raise SystemExit(f"response has no output {name}")
    return value[0].decode("utf-8")


def unary(client, args, headers):
    result = client.infer(args.model, [make_input(args.text)], headers=headers,
                          client_timeout=args.timeout)
    out = {"ok": True, "output": first_str(result, "OUTPUT0")}
    if result.as_numpy("METADATA") is not None:
        out["metadata"] = json.loads(first_str(result, "METADATA"))
    return out


def stream(client, args, headers):
    # `--model a,b`: one request per model, in order, on the same stream (each after the
    # previous one's answers), so a test can switch models mid-stream.
    models = args.model.split(",")
    outputs, errors, done, stopping = [], [], threading.Event(), threading.Event()

    def callback(result, error):
        # Runs on tritonclient's reader thread, one call per response (or per stream error).
        if stopping.is_set():
            return  # our own cancel in stop_stream reports CANCELLED: not the server's answer
        if error is not None:
            errors.append(error)
            done.set()
            return
        outputs.append(first_str(result, "OUTPUT0"))
        if len(outputs) >= STREAM_RESPONSES * len(models):
            done.set()

    # A stream-level failure (e.g. UNAUTHENTICATED from a gateway) is not raised here: it
    # reaches the callback as an InferenceServerException with a status.
    client.start_stream(callback=callback, headers=headers)
    try:
        finished = True
        for i, model in enumerate(models):
            client.async_stream_infer(model, [make_input(args.text)], request_id=f"req-{i + 1}")
            deadline = time.monotonic() + args.timeout
            while len(outputs) < STREAM_RESPONSES * (i + 1) and not errors and time.monotonic() < deadline:
                time.sleep(0.01)
            if errors or len(outputs) < STREAM_RESPONSES * (i + 1):
                break
        finished = done.wait(args.timeout if not errors else 0)
    except InferenceServerException as e:
        # The stream already died; tritonclient marks it inactive just before it calls back
        # with the real error (and its gRPC status), so give the callback a moment to land.
        done.wait(2.0)
        if not errors:
            errors.append(e)
        finished = False
    finally:
        # Cancel if the server stalled; otherwise close the request side and drain politely.
        stopping.set()
        client.stop_stream(cancel_requests=not done.is_set())
    if errors:
        # error_message responses carry no status (null); gRPC-level failures do.
        e = errors[0]
        return {"ok": False, "error": e.message(), "status": e.status(), "message": e.message()}
    if not finished:
        return {"ok": False, "error": f"timed out after {args.timeout}s with {len(outputs)} responses",
                "status": None, "outputs": outputs}
    return {"ok": True, "outputs": outputs}


def load(client, args, headers):
    client.load_model(args.model, headers=headers, client_timeout=args.timeout)
    return {"ok": True}


def live(client, args, headers):
    return {"ok": True, "live": client.is_server_live(headers=headers, client_timeout=args.timeout)}


MODES = {"unary": unary, "stream": stream, "load": load, "live": live}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="host:port, plain gRPC (no TLS)")
    p.add_argument("--token", help="sent as `authorization: Bearer T`")
    p.add_argument("--model", default="echo")
    p.add_argument("--text", default="hello", help="the INPUT0 BYTES value")
    p.add_argument("--mode", choices=sorted(MODES), default="unary")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per call / for the stream")
    args = p.parse_args()

    # gRPC metadata keys must be lower case; grpcio rejects the call otherwise.
    headers = {"authorization": f"Bearer {args.token}"} if args.token else None
    client = grpcclient.InferenceServerClient(url=args.url)
    try:
        out = MODES[args.mode](client, args, headers)
    except InferenceServerException as e:
        out = {"ok": False, "status": e.status(), "message": e.message()}
    finally:
        client.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
