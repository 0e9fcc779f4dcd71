"""The tutorial's own loop as a plain script: the baseline gdfit must beat, process to process.

usage: python benchmarks/tutorial_loop.py UPDATES LR [SIZE]
Runs exactly UPDATES updates (threshold 0 never stops it early), with the tutorial's
`while loss > threshold` check, printing nothing inside the loop.
"""

import sys
import time

import torch
import torch.nn.functional as F

updates, learning_rate = int(sys.argv[1]), float(sys.argv[2])
size = int(sys.argv[3]) if len(sys.argv) > 3 else 0
if size:
    target = torch.rand(size, size, generator=torch.Generator().manual_seed(1))
else:
    target = torch.FloatTensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
x = torch.rand_like(target)
x.requires_grad = True
loss = F.mse_loss(x, target)
threshold = 0.0
iter_cnt = 0
started = time.perf_counter()
while loss > threshold and iter_cnt < updates:
    iter_cnt += 1
    loss.backward()
    x = x - learning_rate * x.grad
    x.detach_()
    x.requires_grad_(True)
    loss = F.mse_loss(x, target)
elapsed = time.perf_counter() - started
print(f"{iter_cnt} {elapsed}", file=sys.stderr)
