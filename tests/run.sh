#!/usr/bin/env bash
# The whole test suite, as CI runs it: install test dependencies, check formatting and lints,
# then unit and integration tests (both io_uring and legacy drivers).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
