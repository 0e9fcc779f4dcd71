#!/usr/bin/env bash
# The GPU checks, in one run of under 5 minutes on a CUDA machine with gdfit installed
# (pip install -e '.[test]'):
#   1. the test suite's CUDA-marked tests (tests/test_cuda.py: CPU and CUDA trajectories on the
#      tutorial's problem, optimizers, a sweep on CUDA against the same sweep on the CPU);
#   2. the 8192x8192 update of the default engine against the GPU's own copy-bandwidth floor, in
#      interleaved rounds (benchmarks/gpu.py).
# `gpu_check.sh --dry-run` runs the same steps on the CPU of a machine without a GPU: it collects
# the CUDA tests (they import and are found) and runs benchmarks/gpu.py on the CPU at a small size,
# so that the script is known to work before a card is lent (tests/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ "${1:-}" == "--dry-run" ]]; then
  echo "gpu_check: dry run on the CPU"
  timeout 240 "$PYTHON" -m pytest -q -m cuda --collect-only tests/test_cuda.py
  timeout 120 "$PYTHON" -m benchmarks.gpu --device cpu --size 256 --updates 5 --rounds 1
  exit 0
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
"$PYTHON" -c "import torch; print('card:', torch.cuda.get_device_name())"
timeout 240 "$PYTHON" -m pytest -q -m cuda tests/
timeout 120 "$PYTHON" -m benchmarks.gpu
