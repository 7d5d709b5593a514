#!/usr/bin/env bash
# The whole test suite: lint, types, front-end build, Python tests (unit, server, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check jupyter_byok tests benchmarks
ruff format --check jupyter_byok tests benchmarks
echo "== mypy"
mypy
echo "== front end: build"
(cd labextension && jlpm install --immutable >/dev/null 2>&1 || jlpm install && jlpm build:prod)
echo "== front end: unit tests"
(cd labextension && jlpm test)
echo "== pytest (unit, server, kernel, notebook and browser tests)"
# Two worker processes (xdist): a test that crashes the interpreter (a native crash in
# llama.cpp, say) is reported as that test failing, and the rest of the suite still runs.
# worksteal, not loadfile/loadgroup: those re-queue a crashed test's whole file and, with
# a test that always crashes, loop forever (measured with pytest-xdist 3.8).
python -m pytest -n "${BYOK_TEST_WORKERS:-2}" --dist worksteal "$@"
