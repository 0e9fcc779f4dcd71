"""The baseline process of issue 17's whole-run figure: import torch, allocate the target and x as
gdfit draws a random target and start (seeded uniform numbers), then N updates at the three-pass
memory floor (read x and the target, write x).

usage: python benchmarks/floor_process.py SIZE UPDATES
"""

import sys

import torch

size, updates = int(sys.argv[1]), int(sys.argv[2])
generator = torch.Generator().manual_seed(1)
target = torch.rand(size, size, generator=generator)
x = torch.rand(size, size, generator=generator)
for _ in range(updates):
    x.add_(target, alpha=-1e-3)
