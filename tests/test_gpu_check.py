"""benchmarks/gpu_check.sh is ready before a GPU is lent: its dry run takes the same steps on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_check_dry_run_collects_the_cuda_tests_and_times_the_update_on_the_cpu():
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=400, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tests/test_cuda.py::" in proc.stdout  # the CUDA tests were found
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 256x256 float32")]
    assert len(rows) == 3 and "device: cpu (dry run)" in proc.stdout
    for row in rows:  # each a positive time and ratio
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert float(cells[1].split()[0]) > 0 and float(cells[3].split("x")[0]) > 0
