#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with the Rust toolchain: the
# build dependencies, curl (a real client), the `openai` Python SDK (a real client).
# Installs only what is missing.
set -euo pipefail

"$(dirname "$0")/../packaging/install-build-deps.sh"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
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
