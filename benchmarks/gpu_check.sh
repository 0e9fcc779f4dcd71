#!/usr/bin/env bash
# The GPU checks, in one run of under 5 minutes on a CUDA machine with gdfit installed
# (pip install -e '.[test]'):
#   1. the test suite's CUDA-marked tests (tests/test_cuda.py: CPU and CUDA trajectories on the
#      tutorial's problem, optimizers, a sweep on CUDA against the same sweep on the CPU);
#   2. the 8192x8192 update of the default engine against the GPU's own copy-bandwidth floor, in
#      interleaved rounds (benchmarks/gpu.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
timeout 240 "$PYTHON" -m pytest -q -m cuda tests/
timeout 120 "$PYTHON" -m benchmarks.gpu
