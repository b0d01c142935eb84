#!/usr/bin/env bash
# The test suite: Rust unit + integration tests, then the official OpenAI
# Python SDK against a real gateway. README's test command; CI runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import openai, anthropic, pytest' 2>/dev/null; then
    echo "installing the Python test dependencies (openai, anthropic, pytest)…"
    python3 -m pip install --quiet --disable-pip-version-check openai anthropic pytest
fi

# Plain `cargo test` rather than nextest: it is on every machine with cargo.
cargo test --all-targets
# The integration tests above built target/debug/tollgate (a plain
# `cargo build` would rebuild dependencies with other features).
TOLLGATE_BIN="$PWD/target/debug/tollgate" python3 -m pytest -q tests/python
