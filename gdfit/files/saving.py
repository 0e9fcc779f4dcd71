"""--save: a run's fitted parameters under their own names and its prediction, as .npz or .pt.

Written atomically through `write_atomic` (a temp file in the same folder, then a rename; through
a symlink to its target; never onto a device or FIFO), also when the run diverged or was interrupted.
"""

from __future__ import annotations

import io
from pathlib import Path

from gdfit.errors import OutputError

FORMATS = (".npz", ".pt")


def check_save_path(path: Path) -> None:
    """Fail before the run: a known format and a writable folder."""
    from gdfit.files.writing import check_writable

    if path.is_dir():
        raise OutputError("is a directory; give a file name ending in .npz or .pt", source=str(path), key="--save")
    if path.suffix.lower() not in FORMATS:
        raise OutputError(f"cannot tell the format from {path.suffix or 'no extension'!r}; use .npz or .pt",
                          source=str(path), key="--save")
    check_writable(path, key="--save")


def save_parameters(path: Path, model, params) -> None:
    """Write `model.named_tensors(params)` (one run's parameters, no run dimension) to `path`:
    tensors, or numpy arrays from a fit computed on the host (.npz only; torch is not imported)."""
    import numpy as np

    from gdfit.files.writing import write_atomic

    named = model.named_tensors(params)
    if path.suffix.lower() == ".pt":
        import torch

        tensors = {name: t.detach().cpu().contiguous() for name, t in named.items()}
        write_atomic(path, lambda handle: torch.save(tensors, handle), key="--save")
        return
    # numpy has no bfloat16: such tensors are saved as float32, which holds every bfloat16 exactly
    arrays = {name: t if isinstance(t, np.ndarray) else _numpy(t) for name, t in named.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue(), key="--save")


def _numpy(t):
    """A tensor as a numpy array on the host; bfloat16 (which numpy lacks) as float32."""
    t = t.detach().cpu().contiguous()
    return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy()
