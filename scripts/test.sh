#!/usr/bin/env bash
# Set up .venv/ and run the whole test suite: ruff, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
