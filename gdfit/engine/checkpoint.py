"""Checkpoints: the whole state of a run, written atomically, read back with weights_only=True.

A checkpoint holds the update count, the parameters, the optimizer's state, the stop rules' state
(best loss, patience counter, who is still going), the timeout budget used, the loss history, the
resolved config, a SHA-256 of the target, a SHA-256 of every file the run reads (target, data,
model inputs, ...), the versions, torch's thread count, and a SHA-256 of all of that, checked on
load: torch.load does not check the archive's CRCs, so a flipped byte would otherwise resume quietly
from damaged numbers. Every
field is checked before it is used (counts are integers, times finite, parameters finite, each state
tensor of its expected shape). The schedule's position is the update count. Resuming from it continues the very same arithmetic, so the run ends bit for bit where the
uninterrupted run would have (tests/engine/test_checkpoint.py).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gdfit.lazy import loaded, torch

from gdfit import __version__
from gdfit.errors import InputFileError
from gdfit.engine.loop import LoopState
from gdfit.words import plural

FORMAT = 3  # 2: a content digest and the input files' digests; 3: torch's thread count
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
    inputs: dict[str, str] = field(default_factory=dict)  # config key of each file read -> its SHA-256
    threads: int | None = None  # torch's intra-op threads: they decide how large sums add up


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
        "inputs_sha256": dict(checkpoint.inputs),
        "threads": checkpoint.threads,
    }


def seal(document: dict[str, Any]) -> dict[str, Any]:
    """The document with its content digest (over every other field) added."""
    return {**document, "content_sha256": content_digest(document)}


def content_digest(document: dict[str, Any]) -> str:
    """SHA-256 over every field but the digest itself: keys, values, each tensor's dtype, shape and bytes."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in document.items() if k != "content_sha256"})
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor:{data.dtype}:{list(value.shape)}:".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint whole."""
    from gdfit.files.writing import write_atomic

    document = seal(_document(checkpoint))
    write_atomic(path, lambda handle: torch.save(document, handle), key="--checkpoint")  # no copy in memory


def load(path: Path) -> Checkpoint:
    """Read a checkpoint; anything else, or a truncated one, is an input error (exit 2)."""
    name = str(path)
    if not path.is_file():
        from gdfit.files.paths import missing_reason

        reason = missing_reason(path)
        raise InputFileError(("no such checkpoint file" if reason == "no such file" else reason)
                             if not path.exists() else "is not a regular file",
                             source=name, key="--resume")
    document = _read(path, name)
    try:
        return _parse(document)
    except Unusable as err:
        raise InputFileError(f"not a usable gdfit checkpoint: {err}", source=name, key="--resume") from None
    except Exception:  # a shape no check above foresaw: still the file's fault, said plainly
        raise InputFileError("not a usable gdfit checkpoint: its fields are not the ones gdfit writes",
                             source=name, key="--resume") from None


def _read(path: Path, name: str) -> Any:
    """torch.load with weights_only=True, every failure of a damaged file an input error: the archive
    check itself raises on some damage (zipfile's BadZipFile from a ZIP64 record), and torch's reasons
    vary by damage. torch's warnings about what it read (a pickle protocol number it does not know)
    stay off stderr: the content digest decides whether the content is whole."""
    import warnings
    import zipfile

    damaged = "cannot read the checkpoint (truncated, damaged or not a gdfit checkpoint): "
    try:
        whole = zipfile.is_zipfile(path)
    except Exception as err:  # BadZipFile, OSError, ValueError from the archive's own records
        raise InputFileError(damaged + _reason(err), source=name, key="--resume") from None
    if not whole:
        raise InputFileError("cannot read the checkpoint: it is not a whole torch archive (truncated, damaged, "
                             "or another kind of file)", source=name, key="--resume")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        if "Weights only load failed" in text:
            reason = "it holds objects other than tensors, numbers and text, which are never loaded (they could run code)"
        else:
            reason = _reason(err)
        raise InputFileError(damaged + reason, source=name, key="--resume") from None


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:120] if text else type(err).__name__


class Unusable(ValueError):
    """A checkpoint field that is missing or not what gdfit writes (said in plain words)."""


FIELDS = ("versions", "config", "target_sha256", "iters", "params", "optimizer", "rules", "initial", "elapsed_s",
          "history", "inputs_sha256", "threads", "content_sha256")


def _parse(document: Any) -> Checkpoint:
    if not isinstance(document, dict) or "gdfit_checkpoint" not in document:
        raise Unusable("it has no gdfit_checkpoint marker")
    if document["gdfit_checkpoint"] != FORMAT:
        raise Unusable(f"format {document['gdfit_checkpoint']!r}, this gdfit reads format {FORMAT}; "
                       "start again without --resume")
    missing = [key for key in FIELDS if key not in document]
    if missing:
        raise Unusable(f"it lacks the field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if document["content_sha256"] != content_digest(document):
        raise Unusable("its content does not match its SHA-256: the file was damaged or changed after gdfit "
                       "wrote it")
    iters = document["iters"]
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 0:
        raise Unusable(f"iters is {iters!r}, expected a whole number >= 0")
    elapsed = document["elapsed_s"]
    if not isinstance(elapsed, (int, float)) or isinstance(elapsed, bool) or not math.isfinite(elapsed) \
            or elapsed < 0:
        raise Unusable(f"elapsed_s is {elapsed!r}, expected a finite number of seconds >= 0")
    threads = document["threads"]
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise Unusable(f"threads is {threads!r}, expected a whole number >= 1")
    params = _tensors(document["params"], "params", finite=True)
    state = LoopState(
        iters=iters,
        params=params,
        optimizer=_optimizer(document["optimizer"]),
        rules=_rules(document["rules"]),
        initial=_one_run(document["initial"], "initial"),
        elapsed_s=float(elapsed),
    )
    history = _one_dim(document["history"], "history").tolist()
    if len(history) != state.iters + 1:
        raise Unusable(f"its history has {plural(len(history), 'loss', 'losses')} for "
                       f"{plural(state.iters, 'update')}; expected one loss per update and the start's")
    return Checkpoint(state, history, _mapping(document["config"], "config"), _text(document["target_sha256"]),
                      {str(k): _text(v) for k, v in _mapping(document["versions"], "versions").items()},
                      {str(k): _text(v) for k, v in _mapping(document["inputs_sha256"], "inputs_sha256").items()},
                      threads)


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise Unusable(f"{what} is {type(value).__name__}, expected a mapping")
    return dict(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Unusable(f"{value!r} is not text")
    return value


def _tensors(mapping: Any, what: str, finite: bool = False) -> dict[str, torch.Tensor]:
    for name, value in _mapping(mapping, what).items():
        if not isinstance(value, torch.Tensor):
            raise Unusable(f"{what} entry {name!r} is not a tensor")
        if value.ndim == 0 or value.shape[0] != 1:
            raise Unusable(f"{what} entry {name!r} has shape {list(value.shape)}, expected one run's [1, ...]")
        if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise Unusable(f"{what} entry {name!r} holds NaN or infinite values")
    return dict(mapping)


def _optimizer(mapping: Any) -> dict[str, dict[str, torch.Tensor]]:
    return {str(name): _tensors(state, f"optimizer state of {name!r}", finite=True)
            for name, state in _mapping(mapping, "optimizer").items()}


def _rules(mapping: Any) -> dict[str, torch.Tensor]:
    from gdfit.engine.stopping import StopRules

    rules = _mapping(mapping, "rules")
    unknown = sorted(set(rules) - set(StopRules.FIELDS))
    if unknown:
        raise Unusable(f"rules has unknown entries {', '.join(map(str, unknown))}")
    return {name: _one_run(value, f"rules entry {name!r}") for name, value in rules.items()}


def _one_run(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or list(value.shape) != [1]:
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise Unusable(f"{what} is {shape}, expected a tensor of shape [1] (one run)")
    return value


def _one_dim(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 1 or not value.is_floating_point():
        raise Unusable(f"{what} is not a 1-D tensor of numbers")
    return value


def check_optimizer_state(saved: dict[str, dict[str, torch.Tensor]], expected: dict[str, dict[str, torch.Tensor]],
                          iters: int, source: str) -> None:
    """Each parameter's saved optimizer state has the entries, shapes and dtypes a fresh run of this
    optimizer makes (`expected`); none at all only before the first update."""
    for name in sorted(set(saved) | set(expected)):
        have, want = saved.get(name, {}), expected.get(name, {})
        if not have and (not want or iters == 0):
            continue
        described = {k: (list(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in have.items()}
        wanted = {k: (list(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in want.items()}
        if described != wanted:
            raise InputFileError(f"not a usable gdfit checkpoint: the optimizer state of {name!r} is {described}, "
                                 f"this optimizer keeps {wanted}", source=source, key="--resume",
                                 hint="it was written by another gdfit or another optimizer: start again without --resume")


def config_changes(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The top-level keys, sorted, in which `config` differs from a checkpoint's (`MAY_CHANGE` aside)."""
    return sorted(k for k in set(config) | set(saved) if k not in MAY_CHANGE and config.get(k) != saved.get(k))


def check_compatible(checkpoint: Checkpoint, config: dict[str, Any], digest: str, params: dict[str, torch.Tensor],
                     source: str) -> None:
    """Refuse a checkpoint of another config, target, version or shape, saying what differs."""
    problems = []
    if checkpoint.versions != versions():
        problems.append(f"written by gdfit {checkpoint.versions.get('gdfit')} with torch "
                        f"{checkpoint.versions.get('torch')}; this is gdfit {__version__} with torch {torch_version()}, "
                        "and exact resume needs the same arithmetic")
    changed = config_changes(checkpoint.config, config)
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
        self.inputs: dict[str, str] = {}  # the input files' digests, stored in every checkpoint

    def due(self) -> bool:
        return self.clock() - self.last >= self.every_s

    def save(self, checkpoint: Checkpoint) -> None:
        from gdfit.engine.interrupts import pause_point

        pause_point("checkpoint")
        started = time.perf_counter()
        checkpoint.inputs = dict(self.inputs)
        save(self.path, checkpoint)
        self.seconds.append(time.perf_counter() - started)
        self.last = self.clock()
