"""Device and dtype, decided once per run, with torch's own reason when one is unavailable."""

from __future__ import annotations

from dataclasses import dataclass

from gdfit.lazy import torch

from gdfit.config import DTYPES as DTYPE_NAMES
from gdfit.errors import DeviceError


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config's dtype name (the config spells each as torch spells it)."""
    if name not in DTYPE_NAMES:
        raise KeyError(name)
    return getattr(torch, name)



@dataclass(frozen=True)
class HostDevice:
    """The CPU, for a run that computes in numpy from start to end (a curve fit by lm): what is
    read of a torch.device (`type`, `index`, its text), without importing torch."""

    type: str = "cpu"
    index: None = None

    def __str__(self) -> str:
        return self.type


HOST = HostDevice()


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device must exist or we say why not."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        _require_cuda(device)
        return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device.type == "mps" and not _mps_available():
        built = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_built()
        why = "MPS needs macOS on Apple silicon" if built else "this torch build has no MPS support"
        raise DeviceError(f"device 'mps' is not available: {why}", key="device", hint="use device: cpu or auto")
    return device


def _require_cuda(device: torch.device) -> None:
    if torch.version.cuda is None:
        raise DeviceError(
            f"device {str(device)!r} is not available: this torch is a CPU-only build",
            key="device",
            hint="install a CUDA build of torch (see docs/getting-started.md, CUDA), or use device: cpu or auto",
        )
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {str(device)!r} is not available: torch {torch.__version__} (CUDA {torch.version.cuda}) "
            "found no usable GPU or driver",
            key="device",
            hint="use device: cpu or auto",
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"device {str(device)!r} is out of range: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}",
            key="device",
        )


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a config name; half precisions are refused where the device lacks them."""
    dtype = torch_dtype(name)
    if device.type == "mps" and dtype == torch.float64:
        raise DeviceError("dtype float64 is not supported on mps", key="dtype", hint="use dtype: float32")
    return dtype


def describe(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3)`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
