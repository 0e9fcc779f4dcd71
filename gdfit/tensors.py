"""Turn the config's target and init specs into tensors, guarding memory before allocating."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdfit.config import FileSource, NamedInit, RandomSource, Resolved
from gdfit.devices import DTYPES
from gdfit.errors import InputFileError, ResourceError

# Fraction of free memory a run may plan to use: the rest is for torch, Python and the OS.
MEMORY_HEADROOM = 0.8


def available_bytes(device: torch.device) -> int:
    """Free memory where tensors will live: MemAvailable on CPU, mem_get_info on CUDA."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def guard_memory(numel: int, dtype: torch.dtype, device: torch.device, copies: float, what: str) -> None:
    """Refuse (exit 2) a problem whose `copies` tensors of `numel` elements would not fit."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = numel * itemsize * copies
    free = available_bytes(device)
    if need > free * MEMORY_HEADROOM:
        raise ResourceError(
            f"{what} needs about {_gib(need)} on {device} ({numel:,} elements x {copies:g} working copies), "
            f"but only {_gib(free)} is free",
            hint="use a smaller shape, dtype float16/bfloat16, or another device",
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def build_target(resolved: Resolved, dtype: torch.dtype, device: torch.device, copies: float,
                 missing_ok: bool = False) -> torch.Tensor:
    """The target tensor on `device`; `copies` is the working-set size in target-sized tensors.
    With `missing_ok` (a model that leaves missing entries out), NaN and empty CSV cells are NaN."""
    spec = resolved.config.target
    if isinstance(spec, RandomSource):
        shape = tuple(spec.random.shape)
        guard_memory(math.prod(shape), dtype, device, copies, f"target of shape {list(shape)}")
        gen = torch.Generator().manual_seed(spec.random.seed)
        data = torch.rand(shape, generator=gen, dtype=_gen_dtype(dtype))
        data = data * (spec.random.high - spec.random.low) + spec.random.low
        return data.to(device=device, dtype=dtype)
    if isinstance(spec, FileSource):
        data = load_tensor_file(resolved.resolve_path(spec.file), "target", dtype, device, copies, missing_ok)
        return data.to(device=device, dtype=_spec_dtype(spec, dtype))
    return build_inline(spec, dtype, device, copies, "target")


def build_inline(spec: Any, dtype: torch.dtype, device: torch.device, copies: float, what: str) -> torch.Tensor:
    data = torch.tensor(spec, dtype=torch.float64)
    guard_memory(data.numel(), dtype, device, copies, what)
    return data.to(device=device, dtype=dtype)


def build_init(resolved: Resolved, target: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """The starting x: generated from `seed` on the CPU (the same numbers on every device)."""
    config = resolved.config
    spec = config.init
    seed = config.seed if seed is None else seed
    shape, dtype, device = target.shape, target.dtype, target.device
    if isinstance(spec, NamedInit):
        gen = torch.Generator().manual_seed(seed)
        if spec.name == "random":
            data = torch.rand(shape, generator=gen, dtype=_gen_dtype(dtype))
        elif spec.name == "normal":
            data = torch.randn(shape, generator=gen, dtype=_gen_dtype(dtype)) * spec.std + spec.mean
        elif spec.name == "zeros":
            data = torch.zeros(shape, dtype=dtype)
        else:
            data = torch.ones(shape, dtype=dtype)
        return data.to(device=device, dtype=_spec_dtype(spec, dtype))
    if isinstance(spec, RandomSource):
        gen = torch.Generator().manual_seed(spec.random.seed)
        data = torch.rand(tuple(spec.random.shape), generator=gen, dtype=_gen_dtype(dtype))
        data = data * (spec.random.high - spec.random.low) + spec.random.low
    elif isinstance(spec, FileSource):
        data = load_tensor_file(resolved.resolve_path(spec.file), "init", dtype, device, 1)
    else:
        data = torch.tensor(spec, dtype=torch.float64)
    if tuple(data.shape) != tuple(shape):
        raise InputFileError(
            f"shape {list(data.shape)} differs from the target's shape {list(shape)}", source=resolved.source, key="init"
        )
    return data.to(device=device, dtype=dtype)


def _gen_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precisions are drawn in float32 and rounded, so a seed means the same start everywhere.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _spec_dtype(spec: Any, default: torch.dtype) -> torch.dtype:
    return DTYPES[spec.dtype] if getattr(spec, "dtype", None) else default


def load_tensor_file(path: Path, role: str, dtype: torch.dtype, device: torch.device, copies: float,
                     missing_ok: bool = False) -> torch.Tensor:
    """Read .csv/.txt, .npy (no pickles) or .pt (weights_only) into a finite CPU tensor (NaN
    allowed, as missing entries, with `missing_ok`)."""
    name = str(path)
    if not path.exists():
        raise InputFileError("no such file", source=name, key=f"{role}.file")
    if not path.is_file():
        raise InputFileError("is not a regular file", source=name, key=f"{role}.file")
    suffix = path.suffix.lower()
    loaders = {".csv": _load_text, ".txt": _load_text, ".npy": _load_npy, ".pt": _load_pt, ".pth": _load_pt}
    if suffix not in loaders:
        raise InputFileError(
            f"unsupported file type {suffix or '(none)'!r}; use .csv, .txt, .npy or .pt", source=name, key=f"{role}.file"
        )
    try:
        guard = lambda n: guard_memory(n, dtype, device, copies, f"{role} file")  # noqa: E731
        data = _load_text(path, guard, missing_ok) if loaders[suffix] is _load_text else loaders[suffix](path, guard)
    except (InputFileError, ResourceError):
        raise
    except Exception as err:  # each loader's own errors vary by format; all mean "bad file"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputFileError(f"cannot read {suffix} file: {reason}", source=name, key=f"{role}.file") from None
    return _check_values(data, name, role, missing_ok)


def _load_text(path: Path, guard, missing_ok: bool = False) -> torch.Tensor:
    guard(path.stat().st_size // 2)  # at least one element per two bytes of text, at most
    delimiter = "," if path.suffix.lower() == ".csv" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty file is reported as our own error below
        try:
            array = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=1, comments="#")
        except ValueError:
            if not missing_ok or delimiter is None:
                raise
            # an empty cell is a missing entry; read cell by cell only when the fast reader refused
            array = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=1, comments="#",
                               converters=lambda cell: float(cell) if cell.strip() else math.nan)
    return torch.from_numpy(np.ascontiguousarray(array))


def _load_npy(path: Path, guard) -> torch.Tensor:
    array = np.load(path, allow_pickle=False, mmap_mode="r")
    guard(int(array.size))
    if array.dtype.kind not in "fiub":
        raise InputFileError(f"holds {array.dtype} data; expected real numbers", source=str(path))
    return torch.from_numpy(np.array(array, dtype=np.float64 if array.dtype.kind != "f" else array.dtype))


def _load_pt(path: Path, guard) -> torch.Tensor:
    guard(path.stat().st_size // 8)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, torch.Tensor):
        raise InputFileError(f"holds a {type(data).__name__}, expected a single tensor", source=str(path))
    if data.is_complex() or data.dtype == torch.bool:
        raise InputFileError(f"holds a {data.dtype} tensor; expected real numbers", source=str(path))
    return data.detach().to(torch.float64) if not data.is_floating_point() else data.detach()


def _check_values(data: torch.Tensor, name: str, role: str, missing_ok: bool = False) -> torch.Tensor:
    if data.numel() == 0:
        raise InputFileError("holds no numbers", source=name, key=f"{role}.file")
    if missing_ok:
        if torch.isinf(data).any():
            bad = torch.isinf(data).sum().item()
            raise InputFileError(f"holds {bad} infinite value(s) (NaN or an empty cell marks a missing entry)",
                                 source=name, key=f"{role}.file")
    elif not torch.isfinite(data).all():
        bad = (~torch.isfinite(data)).sum().item()
        raise InputFileError(f"holds {bad} NaN or infinite value(s)", source=name, key=f"{role}.file")
    return data
