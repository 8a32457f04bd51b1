#!/usr/bin/env bash
# Build, install and run the benchmark against the pure-TensorFlow reference (README.md's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2
python -m pip install ".[bench]"
python -m fusedbnn.bench "$@"
