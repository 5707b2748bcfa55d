#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with the Rust toolchain: the
# build dependencies, curl (a real client), the `openai` and `tritonclient[grpc]` Python SDKs
# (real clients), Node.js and the test OIDC identity provider's npm packages (tests/idp).
# Installs only what is missing.
set -euo pipefail

"$(dirname "$0")/../packaging/install-build-deps.sh"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
# vectorscan (masking) is built from source by vectorscan-rs-sys: it needs cmake and Boost headers.
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
[ -d /usr/include/boost ] || need_apt+=(libboost-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import openai' >/dev/null 2>&1; then
  echo "installing the openai Python SDK"
  python3 -m pip install --quiet openai 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages openai
fi

# KServe v2 / Triton gRPC: tritonclient is the real client and its service stubs back the test
# server (tests/clients/kserve_grpc_server.py); it pulls grpcio and protobuf.
if ! python3 -c 'import grpc, tritonclient.grpc.service_pb2_grpc' >/dev/null 2>&1; then
  echo "installing the tritonclient[grpc] and grpcio Python packages"
  python3 -m pip install --quiet 'tritonclient[grpc]' grpcio 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'tritonclient[grpc]' grpcio
fi

# The test IdP (oidc-provider 9) needs Node.js >= 20.18 (URL.parse, crypto.hash).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)'; then
  echo "tests/idp needs Node.js >= 20.18, found $(node --version)" >&2
  exit 1
fi
# npm keeps node_modules/.package-lock.json: newer than the lock file means the install is current.
idp="$(dirname "$0")/idp"
if [ ! "$idp/node_modules/.package-lock.json" -nt "$idp/package-lock.json" ]; then
  echo "installing the test IdP's npm packages"
  npm ci --prefix "$idp" --no-audit --no-fund --loglevel=error
fi
