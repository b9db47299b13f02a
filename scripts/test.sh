#!/usr/bin/env bash
# Set up .venv/ and run the whole test suite: ruff (lint and format), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q "$@"
