#!/usr/bin/env bash
# Build, install and test fusedbnn in the active Python environment (README.md's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
python -m pip install ".[test]"
python -m pytest -q tests "$@"
