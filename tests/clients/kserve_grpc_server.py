#!/usr/bin/env python3
"""A KServe v2 / Triton gRPC inference server for the tests, on the service stubs tritonclient ships.

Binds 127.0.0.1:0 (plain h2c), prints `PORT <n>` and serves until SIGTERM/SIGINT. Models:
  echo   ModelInfer returns OUTPUT0 = INPUT0, plus METADATA: a JSON object of the request's
         gRPC metadata (so a test can see which headers the gateway forwarded, added or stripped).
  stream ModelStreamInfer answers each request with 3 responses, OUTPUT0 suffixed "#1".."#3"
         (echo streams too).
  fail   ModelInfer aborts INVALID_ARGUMENT; ModelStreamInfer answers with error_message.
  slow   ModelInfer sleeps 10 s (past any test deadline), then fails.
Stdout lines `INFER <model>`, `STREAM <model>`, `LOAD <model>`, `UNLOAD <model>` tell a test
which calls reached this server; `TEXT <elements>` what an echo request's INPUT0 held.
"""
import base64
import json
import signal
import struct
import sys
import time
from concurrent import futures

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

READY_MODELS = ("echo", "stream")


def say(line):
    print(line, flush=True)


def decode_bytes_tensor(raw):
    """KServe v2 raw BYTES: each element is a 4-byte little-endian length, then the bytes."""
    items, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        items.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return items


def encode_bytes_tensor(items):
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def input_elements(request, idx):
    """The BYTES elements of input `idx`: tritonclient sends raw_input_contents, other
    clients may use the typed contents field."""
    if idx < len(request.raw_input_contents):
        return decode_bytes_tensor(request.raw_input_contents[idx])
    return list(request.inputs[idx].contents.bytes_contents)


def metadata_json(context):
    """Every metadata key → value (repeated keys joined with ", "; -bin values base64)."""
    seen = {}
    for key, value in context.invocation_metadata():
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        seen[key] = value if key not in seen else seen[key] + ", " + value
    return json.dumps(seen, sort_keys=True)


def echo_response(request, suffix=b"", context=None):
    if not request.inputs:
        raise ValueError("request has no inputs")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise ValueError(f"INPUT0 must be BYTES, got {tensor.datatype}")
    received = input_elements(request, 0)
    # What the model itself received (after the gateway), so a test can check prompt masking.
    say("TEXT " + " | ".join(e.decode("utf-8", "replace") for e in received))
    elements = [e + suffix for e in received]
    resp = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    resp.outputs.add(name="OUTPUT0", datatype="BYTES", shape=list(tensor.shape))
    resp.raw_output_contents.append(encode_bytes_tensor(elements))
    if context is not None:
        resp.outputs.add(name="METADATA", datatype="BYTES", shape=[1])
        resp.raw_output_contents.append(encode_bytes_tensor([metadata_json(context).encode()]))
    return resp


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name in READY_MODELS)

    def ModelMetadata(self, request, context):
        if request.name != "echo":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        return pb.ModelMetadataResponse(
            name="echo", versions=["1"], platform="python",
            inputs=[pb.ModelMetadataResponse.TensorMetadata(name="INPUT0", datatype="BYTES", shape=[-1])],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(name="OUTPUT0", datatype="BYTES", shape=[-1])],
        )

    def ModelInfer(self, request, context):
        say(f"INFER {request.model_name}")
        if request.model_name == "fail":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model fail always fails")
        if request.model_name == "slow":
            # Answers only after the caller's deadline: the gateway must end the call itself.
            time.sleep(10)
            context.abort(grpc.StatusCode.UNAVAILABLE, "too late")
        if request.model_name != "echo":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name}")
        try:
            return echo_response(request, context=context)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    def ModelStreamInfer(self, request_iterator, context):
        # Bidirectional: the client keeps the request side open, so answer each request as it comes.
        for request in request_iterator:
            say(f"STREAM {request.model_name}")
            if request.model_name not in READY_MODELS:
                msg = ("model fail always fails" if request.model_name == "fail"
                       else f"unknown model {request.model_name}")
                yield pb.ModelStreamInferResponse(error_message=msg)
                continue
            try:
                for n in (1, 2, 3):
                    resp = echo_response(request, suffix=f"#{n}".encode())
                    yield pb.ModelStreamInferResponse(infer_response=resp)
            except ValueError as e:
                yield pb.ModelStreamInferResponse(error_message=str(e))

    def RepositoryModelLoad(self, request, context):
        say(f"LOAD {request.model_name}")
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        say(f"UNLOAD {request.model_name}")
        return pb.RepositoryModelUnloadResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    say(f"PORT {port}")

    def stop(signum, frame):
        # Fail open streams at once rather than waiting for them; then let main() return.
        server.stop(grace=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
