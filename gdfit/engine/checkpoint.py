"""Checkpoints: the whole state of a run, written atomically, read back with weights_only=True.

A checkpoint holds the update count, the parameters, the optimizer's state, the stop rules' state
(best loss, patience counter, who is still going), the timeout budget used, the loss history, the
resolved config, a SHA-256 of the target and the versions. The schedule's position is the update
count. Resuming from it continues the very same arithmetic, so the run ends bit for bit where the
uninterrupted run would have (tests/test_checkpoint.py).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gdfit.lazy import loaded, torch

from gdfit import __version__
from gdfit.errors import InputFileError
from gdfit.engine.loop import LoopState
from gdfit.words import plural

FORMAT = 1
# keys a resumed run may change: where it runs and how long it may go on
MAY_CHANGE = ("max_iters", "device", "timeout_s", "sweep")


@dataclass
class Checkpoint:
    """A loop's state with what it belongs to."""

    state: LoopState
    history: list[float]
    config: dict[str, Any]
    target_sha256: str
    versions: dict[str, str]


def target_digest(target: torch.Tensor) -> str:
    """SHA-256 of the target's values, dtype and shape: the same data on any device."""
    data = target.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{data.dtype}{list(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def versions() -> dict[str, str]:
    return {"gdfit": __version__, "torch": torch_version()}


def torch_version() -> str:
    """torch.__version__ (a plain str: torch's class would not load), read from torch's version.py
    when torch is not loaded: a run that computes in numpy reports the same versions unloaded."""
    if loaded():
        import torch as loaded_torch

        return str(loaded_torch.__version__)
    import ast
    import importlib.util

    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    source = Path(spec.origin).with_name("version.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    import importlib.metadata

    return importlib.metadata.version("torch")


def _document(checkpoint: Checkpoint) -> dict[str, Any]:
    state = checkpoint.state
    return {
        "gdfit_checkpoint": FORMAT,
        "versions": checkpoint.versions,
        "config": checkpoint.config,
        "target_sha256": checkpoint.target_sha256,
        "iters": state.iters,
        "params": state.params,
        "optimizer": state.optimizer,
        "rules": state.rules,
        "initial": state.initial,
        "elapsed_s": state.elapsed_s,
        "history": torch.tensor(checkpoint.history, dtype=torch.float64),
    }


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint whole."""
    from gdfit.files.writing import write_atomic

    document = _document(checkpoint)
    write_atomic(path, lambda handle: torch.save(document, handle), key="--checkpoint")  # no copy in memory


def load(path: Path) -> Checkpoint:
    """Read a checkpoint; anything else, or a truncated one, is an input error (exit 2)."""
    name = str(path)
    if not path.is_file():
        raise InputFileError("no such checkpoint file" if not path.exists() else "is not a regular file",
                             source=name, key="--resume")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise InputFileError("cannot read the checkpoint: it is not a whole torch archive (truncated, damaged, "
                             "or another kind of file)", source=name, key="--resume")
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's reasons vary by damage; all mean "not a readable checkpoint"
        text = str(err).strip()
        if "Weights only load failed" in text:
            reason = "it holds objects other than tensors, numbers and text, which are never loaded (they could run code)"
        else:
            reason = text.splitlines()[0][:120] if text else type(err).__name__
        raise InputFileError(f"cannot read the checkpoint (truncated, damaged or not a gdfit checkpoint): {reason}",
                             source=name, key="--resume") from None
    try:
        return _parse(document)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputFileError(f"not a gdfit checkpoint ({type(err).__name__}: {err})", source=name,
                             key="--resume") from None


def _parse(document: Any) -> Checkpoint:
    if not isinstance(document, dict) or "gdfit_checkpoint" not in document:
        raise ValueError("it has no gdfit_checkpoint marker")
    if document["gdfit_checkpoint"] != FORMAT:
        raise ValueError(f"format {document['gdfit_checkpoint']}, this gdfit reads format {FORMAT}")
    state = LoopState(
        iters=int(document["iters"]),
        params=_tensors(document["params"]),
        optimizer={name: _tensors(state) for name, state in document["optimizer"].items()},
        rules=_tensors(document["rules"]),
        initial=document["initial"],
        elapsed_s=float(document["elapsed_s"]),
    )
    history = document["history"].tolist()
    if len(history) != state.iters + 1:
        raise ValueError(f"its history has {plural(len(history), 'loss', 'losses')} for {plural(state.iters, 'update')}")
    return Checkpoint(state, history, dict(document["config"]), str(document["target_sha256"]),
                      dict(document["versions"]))


def _tensors(mapping: Any) -> dict[str, torch.Tensor]:
    if not all(isinstance(v, torch.Tensor) for v in mapping.values()):
        raise TypeError("a state entry is not a tensor")
    return dict(mapping)


def check_compatible(checkpoint: Checkpoint, config: dict[str, Any], digest: str, params: dict[str, torch.Tensor],
                     source: str) -> None:
    """Refuse a checkpoint of another config, target, version or shape, saying what differs."""
    problems = []
    if checkpoint.versions != versions():
        problems.append(f"written by gdfit {checkpoint.versions.get('gdfit')} with torch "
                        f"{checkpoint.versions.get('torch')}; this is gdfit {__version__} with torch {torch_version()}, "
                        "and exact resume needs the same arithmetic")
    changed = sorted(k for k in set(config) | set(checkpoint.config)
                     if k not in MAY_CHANGE and config.get(k) != checkpoint.config.get(k))
    if config.get("max_iters", 0) < checkpoint.state.iters:
        problems.append(f"max_iters {config.get('max_iters')} is below the checkpoint's {plural(checkpoint.state.iters, 'update')}")
    schedule = config.get("schedule") or {}
    if (schedule.get("name") == "cosine" and schedule.get("t_max") is None
            and config.get("max_iters") != checkpoint.config.get("max_iters")):
        problems.append("the cosine schedule's t_max defaults to max_iters, so a new max_iters would change "
                        "every rate after the checkpoint; set schedule.t_max to keep it")
    if changed:
        problems.append("the config differs in " + ", ".join(
            f"{k} (checkpoint {checkpoint.config.get(k)!r}, now {config.get(k)!r})" for k in changed))
    if checkpoint.target_sha256 != digest:
        problems.append("the target's values differ from the checkpoint's (SHA-256 of the target)")
    for name, p in params.items():
        saved = checkpoint.state.params.get(name)
        if saved is None or saved.shape != p.shape or saved.dtype != p.dtype:
            problems.append(f"parameter {name} is {None if saved is None else (list(saved.shape), saved.dtype)}, "
                            f"expected {list(p.shape), p.dtype}")
    if problems:
        raise InputFileError("cannot resume: " + "; ".join(problems), source=source, key="--resume",
                             hint=f"only {', '.join(MAY_CHANGE[:3])} may change on resume")


class Checkpointer:
    """Saves a run's state to `path` every `every_s` seconds (0: at every host look)."""

    def __init__(self, path: Path, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.every_s, self.clock = path, every_s, clock
        self.last = clock()
        self.seconds: list[float] = []  # how long each save took

    def due(self) -> bool:
        return self.clock() - self.last >= self.every_s

    def save(self, checkpoint: Checkpoint) -> None:
        from gdfit.engine.interrupts import pause_point

        pause_point("checkpoint")
        started = time.perf_counter()
        save(self.path, checkpoint)
        self.seconds.append(time.perf_counter() - started)
        self.last = self.clock()
