"""Turn the config's target and init specs into tensors, guarding memory before allocating."""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from gdfit.lazy import torch

from gdfit.config import FileSource, NamedInit, RandomSource, Resolved
from gdfit.files.devices import torch_dtype
from gdfit.errors import ConfigError, InputFileError, ResourceError
from gdfit.reading import BINARY_FILE_BYTES, TEXT_FILE_BYTES, TooLarge, check_size, read_file
from gdfit.words import article, plural

# Fraction of free memory a run may plan to use: the rest is for torch, Python and the OS.
MEMORY_HEADROOM = 0.8
# below this many bytes the free memory is not read (a file read per check, which a curve fit's
# few kilobytes of data do not need): any machine that runs torch has a mebibyte to spare
SMALL_NEED = 2**20


def available_bytes(device: torch.device) -> int:
    """Free memory where tensors will live: on CUDA mem_get_info; on CPU the least of the machine's
    MemAvailable, what the address-space limit (`ulimit -v`) leaves, and what the cgroup's memory
    limit (a container's) leaves, since an allocation past any of them fails."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return min(_machine_available(), _address_space_left(), _cgroup_left())


def _machine_available() -> int:
    value = _proc_field("/proc/meminfo", "MemAvailable:")
    return value if value is not None else os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _proc_field(path: str, name: str) -> int | None:
    """A `Name: N kB` field of a /proc file, in bytes."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


UNLIMITED = 2**63


def _address_space_left() -> int:
    """RLIMIT_AS less the address space this process already maps (VmSize)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return UNLIMITED
    used = _proc_field("/proc/self/status", "VmSize:") or 0
    return max(0, soft - used)


def _cgroup_left(root: str = "/sys/fs/cgroup") -> int:
    """The memory cgroup's limit less its usage: cgroup v2 memory.max / memory.current, or v1
    memory.limit_in_bytes / memory.usage_in_bytes; unlimited when neither can be read."""
    for folder in _cgroup_folders(root):
        for limit_name, usage_name in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit = _read_number(os.path.join(folder, limit_name))
            if limit is not None and limit < UNLIMITED:
                return max(0, limit - (_read_number(os.path.join(folder, usage_name)) or 0))
    return UNLIMITED


def _cgroup_folders(root: str) -> list[str]:
    """This process's own cgroup folders (v2's unified path, v1's memory controller), then the root's."""
    folders = []
    try:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            for line in handle:
                _id, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    folders.append(os.path.join(root, path.lstrip("/")))
                elif "memory" in controllers.split(","):
                    folders.append(os.path.join(root, "memory", path.lstrip("/")))
    except (OSError, ValueError):
        pass
    return folders + [root, os.path.join(root, "memory")]


def _read_number(path: str) -> int | None:
    """An integer file of the cgroup filesystem; `max` (v2's unlimited) and errors read as None."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def guard_memory(numel: int, dtype: torch.dtype, device: torch.device, copies: float, what: str) -> None:
    """Refuse (exit 2) a problem whose `copies` tensors of `numel` elements would not fit."""
    need = numel * dtype.itemsize * copies
    if need < SMALL_NEED:
        return
    free = available_bytes(device)
    if need > free * MEMORY_HEADROOM:
        raise ResourceError(
            f"{what} needs about {_gib(need)} on {device} ({numel:,} elements x {copies:g} working copies), "
            f"but only {_gib(free)} is free{_limited_by(device, free)}",
            hint="use a smaller shape, dtype float16/bfloat16, or another device",
        )


def _limited_by(device: torch.device, free: int) -> str:
    """Which limit leaves `free`, when it is not the machine's free memory."""
    if device.type != "cpu":
        return ""
    near = 2**26  # the address space in use moves a little between two reads
    if abs(free - _address_space_left()) < near:
        return " under this process's address-space limit (ulimit -v)"
    if abs(free - _cgroup_left()) < near:
        return " under the memory limit of this process's cgroup (a container's limit)"
    return ""


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def build_target(resolved: Resolved, dtype: torch.dtype, device: torch.device, copies: float,
                 missing_ok: bool = False) -> torch.Tensor:
    """The target tensor on `device`, in the run's dtype; `copies` is the working-set size in
    target-sized tensors. A source's own `dtype` is the precision its numbers are rounded to.
    With `missing_ok` (a model that leaves missing entries out), NaN and empty CSV cells are NaN."""
    spec = resolved.config.target
    where = {"source": resolved.source, "key": "target"}
    if isinstance(spec, RandomSource):
        shape = tuple(spec.random.shape)
        guard_memory(math.prod(shape), dtype, device, copies, f"target of shape {list(shape)}")
        data = _uniform(spec, torch.Generator().manual_seed(spec.random.seed), dtype, where)
    elif isinstance(spec, FileSource):
        path = resolved.resolve_path(spec.file)
        data = load_tensor_file(path, "target", dtype, device, copies, missing_ok)
        where = {"source": str(path), "key": "target.file"}
    else:
        data = torch.tensor(spec, dtype=torch.float64)
        guard_memory(data.numel(), dtype, device, copies, "target")
    return in_dtype(in_dtype(data, _spec_dtype(spec, dtype), **where), dtype, **where).to(device)


def build_inline(spec: Any, dtype: torch.dtype, device: torch.device, copies: float, what: str) -> torch.Tensor:
    """An inline tensor (a model's inputs or mask) in the run's dtype, its memory checked first."""
    data = torch.tensor(spec, dtype=torch.float64)
    guard_memory(data.numel(), dtype, device, copies, what)
    return in_dtype(data, dtype, key=what).to(device)


def build_init(resolved: Resolved, target: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """The starting x, in the target's dtype: generated from `seed` on the CPU (the same numbers on
    every device), from a stream of its own when the target is random too (`_stream`)."""
    config = resolved.config
    spec = config.init
    seed = config.seed if seed is None else seed
    shape, dtype, device = target.shape, target.dtype, target.device
    where = {"source": resolved.source, "key": "init"}
    if isinstance(spec, NamedInit):
        draw = _gen_dtype(_spec_dtype(spec, dtype))
        if spec.name == "random":
            data = torch.rand(shape, generator=_stream(resolved, seed, dtype), dtype=draw)
        elif spec.name == "normal":
            data = torch.randn(shape, generator=_stream(resolved, seed, dtype), dtype=draw) * spec.std + spec.mean
        else:
            data = (torch.zeros if spec.name == "zeros" else torch.ones)(shape, dtype=dtype)
    elif isinstance(spec, RandomSource):
        data = _uniform(spec, _stream(resolved, spec.random.seed, dtype), dtype, where)
    elif isinstance(spec, FileSource):
        path = resolved.resolve_path(spec.file)
        data = load_tensor_file(path, "init", dtype, device, 1)
        where = {"source": str(path), "key": "init.file"}
    else:
        data = torch.tensor(spec, dtype=torch.float64)
    if tuple(data.shape) != tuple(shape):
        raise InputFileError(
            f"shape {list(data.shape)} differs from the target's shape {list(shape)}", source=resolved.source, key="init"
        )
    return in_dtype(in_dtype(data, _spec_dtype(spec, dtype), **where), dtype, **where).to(device)


def _uniform(spec: RandomSource, gen: torch.Generator, dtype: torch.dtype, where: dict) -> torch.Tensor:
    """Uniform [low, high) numbers of a `{random: ...}` source, drawn in its own dtype if it has one."""
    low, high, own = spec.random.low, spec.random.high, _spec_dtype(spec, dtype)
    largest = torch.finfo(own).max
    for name, value in (("low", low), ("high", high)):
        if abs(value) > largest:
            raise InputFileError(f"{name} {value:g} is beyond the range of {_name(own)} (largest {largest:g})",
                                 source=where["source"], key=f"{where['key']}.random.{name}",
                                 hint="use a wider dtype (float64), or rescale the data")
    data = torch.rand(tuple(spec.random.shape), generator=gen, dtype=_gen_dtype(own))
    return data.mul_(high - low).add_(low)  # in place: the same roundings, without two more copies


def _stream(resolved: Resolved, seed: int, dtype: torch.dtype) -> torch.Generator:
    """The init's generator. One seed is one stream: a random target drawn from the same seed takes
    its first numbers and the init the numbers after them, so the two never start equal."""
    gen = torch.Generator().manual_seed(seed)
    target = resolved.config.target
    if isinstance(target, RandomSource) and target.random.seed == seed:
        torch.rand(tuple(target.random.shape), generator=gen, dtype=_gen_dtype(_spec_dtype(target, dtype)))
    return gen


def in_dtype(data: torch.Tensor, dtype: torch.dtype, source: str | None = None, key: str | None = None) -> torch.Tensor:
    """`data` rounded to `dtype`; a finite value the dtype cannot hold (1e39 in float32, 70000 in
    float16) is an input error naming it, not an infinity that the run would report as divergence."""
    out = data.to(dtype)
    if out.numel() and out.is_floating_point():
        low, high = torch.aminmax(out)  # one pass, no copy: NaN or an infinity shows in its ends
        if not (math.isfinite(float(low)) and math.isfinite(float(high))):
            values = out[~torch.isnan(out)]  # NaN is a missing entry, not a value
            low, high = torch.aminmax(values) if values.numel() else (low.new_zeros(()), low.new_zeros(()))
        if not (math.isfinite(float(low)) and math.isfinite(float(high))):
            worst = float(data.to(torch.float64).abs().max())
            what = f"value {worst:g} is" if math.isfinite(worst) else "its values are"
            error = InputFileError if key and key.endswith(".file") else ConfigError
            raise error(f"{what} beyond the range of {_name(dtype)} (largest {torch.finfo(dtype).max:g})",
                        source=source, key=key, hint="use a wider dtype (dtype: float64), or rescale the data")
    return out


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _gen_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precisions are drawn in float32 and rounded, so a seed means the same start everywhere.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _spec_dtype(spec: Any, default: torch.dtype) -> torch.dtype:
    return torch_dtype(spec.dtype) if getattr(spec, "dtype", None) else default


def load_tensor_file(path: Path, role: str, dtype: torch.dtype, device: torch.device, copies: float,
                     missing_ok: bool = False) -> torch.Tensor:
    """Read .csv/.txt, .npy (no pickles) or .pt (weights_only) into a finite CPU tensor (NaN
    allowed, as missing entries, with `missing_ok`), refusing files over their size limit
    (TEXT_FILE_BYTES, BINARY_FILE_BYTES) before reading them."""
    name = str(path)
    key = f"{role}.file"
    if not path.exists():
        from gdfit.files.paths import missing_reason

        raise InputFileError(missing_reason(path), source=name, key=key)
    if not path.is_file():
        raise InputFileError("is not a regular file", source=name, key=key)
    suffix = path.suffix.lower()
    loaders = {".csv": _load_text, ".txt": _load_text, ".npy": _load_npy, ".pt": _load_pt, ".pth": _load_pt}
    if suffix not in loaders:
        raise InputFileError(
            f"unsupported file type {suffix or '(none)'!r}; use .csv, .txt, .npy or .pt", source=name, key=key
        )
    try:
        guard = lambda n: guard_memory(n, dtype, device, copies, f"{role} file")  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's and torch's own warnings are not the user's business
            data = _load_text(path, guard, missing_ok) if loaders[suffix] is _load_text else loaders[suffix](path, guard)
    except (InputFileError, ResourceError) as err:
        err.source, err.key = err.source or name, err.key or key
        raise
    except TooLarge as err:
        raise InputFileError(f"the file {err.describe()} for {suffix} data", source=name, key=key,
                             hint="use .npy for large data" if suffix in (".csv", ".txt") else None) from None
    except MemoryError:
        raise ResourceError("not enough memory to read the file", source=name, key=key) from None
    except Exception as err:  # each loader's own errors vary by format; all mean "bad file"
        raise InputFileError(f"cannot read {suffix} file: {_reason(err)}", source=name, key=key) from None
    return _check_values(data, name, role, missing_ok)


def _reason(err: Exception) -> str:
    """The first line of a library's error, without its advice on library options."""
    text = str(err).strip()
    if "Weights only load failed" in text:
        return "it holds objects other than tensors, which are never loaded (they could run code)"
    first = text.splitlines()[0] if text else type(err).__name__
    return first.split("; use `usecols`")[0][:200]


_CSV_COLUMNS = re.compile(r"number of columns changed from (\d+) to (\d+) at row (\d+)")
_CSV_VALUE = re.compile(r"could not convert string (.*) to float\d* at row (\d+), column (\d+)")


def _load_text(path: Path, guard, missing_ok: bool = False) -> torch.Tensor:
    raw = read_file(path, TEXT_FILE_BYTES)
    guard(len(raw) // 2)  # at least two bytes of text per number
    from gdfit.files.dialect import decode, plain_csv

    text = decode(raw)  # a byte-order mark (Excel's UTF-8 CSV) is not data; other encodings are refused by line
    delimiter = "," if path.suffix.lower() == ".csv" else None
    if delimiter:  # semicolons or tabs, quoted numbers, a trailing comma: the plain table they mean
        text = plain_csv(text, header=False)
    try:
        try:
            array = np.loadtxt(io.StringIO(text), delimiter=delimiter, dtype=np.float64, ndmin=1, comments="#")
        except ValueError:
            if not missing_ok or delimiter is None:
                raise
            # an empty cell is a missing entry; read cell by cell only when the fast reader refused
            array = np.loadtxt(io.StringIO(text), delimiter=delimiter, dtype=np.float64, ndmin=1, comments="#",
                               converters=lambda cell: float(cell) if cell.strip() else math.nan)
    except ValueError as err:
        raise InputFileError(f"cannot read {path.suffix.lower()} file: {_text_problem(str(err))}") from None
    return torch.from_numpy(np.ascontiguousarray(array))


def _text_problem(message: str) -> str:
    columns = _CSV_COLUMNS.search(message)
    if columns:
        first, found, row = columns.groups()
        return f"row {row} has {plural(int(found), 'value')}, row 1 has {first}"
    value = _CSV_VALUE.search(message)
    if value:
        text, row, column = value.groups()
        return f"row {int(row) + 1}, column {column}: {text} is not a number"
    return message.splitlines()[0][:200] if message else "not a table of numbers"


def _load_npy(path: Path, guard) -> torch.Tensor:
    check_size(os.stat(path), BINARY_FILE_BYTES)
    array = np.load(path, allow_pickle=False, mmap_mode="r")
    guard(int(array.size))
    if array.dtype.kind not in "fiub":
        raise InputFileError(f"holds {array.dtype} data; expected real numbers")
    return torch.from_numpy(np.array(array, dtype=np.float64 if array.dtype.kind != "f" else array.dtype))


# Dense tensors of these dtypes are data; anything else in a .pt file is refused by name.
PT_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8")


def _load_pt(path: Path, guard) -> torch.Tensor:
    check_size(os.stat(path), BINARY_FILE_BYTES)
    guard(path.stat().st_size // 8)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, torch.Tensor):
        raise InputFileError(f"holds {article(type(data).__name__)}, expected a single tensor")
    kind = _unusual(data)
    if kind:
        raise InputFileError(f"holds {article(kind)} tensor; expected a plain dense tensor of real numbers",
                             hint="save t.detach().to_dense().float() (or .dequantize()) instead")
    return data.detach().to(torch.float64) if not data.is_floating_point() else data.detach()


def _unusual(data: torch.Tensor) -> str | None:
    """What makes a loaded tensor something other than plain numbers, or None."""
    if data.layout != torch.strided:
        return f"sparse ({str(data.layout).removeprefix('torch.')})"
    if data.is_nested:
        return "nested"
    if data.is_meta:
        return "meta (a shape with no values)"
    if data.is_quantized:
        return f"quantized ({_name(data.dtype)})"
    if str(data.dtype).removeprefix("torch.") not in PT_DTYPES:
        return _name(data.dtype)
    return None


def _check_values(data: torch.Tensor, name: str, role: str, missing_ok: bool = False) -> torch.Tensor:
    if data.numel() == 0:
        raise InputFileError("holds no numbers", source=name, key=f"{role}.file")
    if missing_ok and data.is_floating_point():
        if torch.isinf(data).any():
            bad = torch.isinf(data).sum().item()
            raise InputFileError(f"holds {bad} infinite value(s) (NaN or an empty cell marks a missing entry)",
                                 source=name, key=f"{role}.file")
    elif data.is_floating_point() and not torch.isfinite(data).all():
        bad = (~torch.isfinite(data)).sum().item()
        raise InputFileError(f"holds {bad} NaN or infinite value(s)", source=name, key=f"{role}.file")
    return data
