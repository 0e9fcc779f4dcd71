"""TensorBoard logs through torch.utils.tensorboard (the optional extra `gdfit[tensorboard]`).

`gdfit run --tensorboard DIR` writes one TensorBoard run into DIR: the resolved config as text, and
the scalars `loss`, `lr` and `grad_norm` at each reported update (step 0 holds the initial loss).
`gdfit sweep --tensorboard DIR` writes one subfolder per run with its grid values and final metrics
(`add_hparams`), for TensorBoard's HParams view.

Scalars are stored as float32, as TensorBoard stores them. NaN and infinite losses are logged as
they are: TensorBoard accepts them in scalars. A sweep's `hparam/loss` metric is NaN for a run whose
final loss is not finite (TensorBoard shows it as NaN; `hparam/converged` and the status say why).
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from gdfit import records
from gdfit.errors import MissingExtraError, OutputError
from gdfit.words import plural

INSTALL_HINT = "pip install 'gdfit[tensorboard]'   (in a checkout: .venv/bin/pip install -e '.[tensorboard]')"
METRICS = ("hparam/loss", "hparam/iters", "hparam/converged")


def require_tensorboard() -> None:
    """Exit 2 with the install command when torch.utils.tensorboard cannot be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the `tensorboard` package)
    except ImportError:
        raise MissingExtraError("TensorBoard logs need the tensorboard package, which is not installed",
                                key="--tensorboard", hint=INSTALL_HINT) from None


def check_log_dir(log_dir: Path, resuming: bool = False) -> None:
    """Fail before a run or sweep, not after it: DIR must be a folder, or creatable in a writable
    one, and, unless a resume goes on with its own logs, hold no TensorBoard logs yet: TensorBoard
    shows every event file under DIR, so an earlier run's curves would mix with this one's."""
    import os

    if log_dir.exists() and not log_dir.is_dir():
        raise OutputError("is not a folder", source=str(log_dir), key="--tensorboard")
    if not resuming and log_dir.is_dir() and next(log_dir.rglob("events.out.tfevents*"), None) is not None:
        raise OutputError("already holds TensorBoard logs, whose curves would mix with this run's",
                          source=str(log_dir), key="--tensorboard",
                          hint="give each run or sweep its own folder (--tensorboard tb/NAME), or remove this one")
    existing = log_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise OutputError(f"{str(existing)!r} is not a writable folder", source=str(log_dir), key="--tensorboard")


@contextmanager
def _writing(log_dir: Path) -> Iterator[None]:
    """Turn a failed write (missing or unwritable folder, full disk) into exit 2, not a traceback."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write TensorBoard logs: {err.strerror or err}", source=str(log_dir),
                          key="--tensorboard") from None


def _writer(log_dir: Path, purge_step: int | None = None) -> Any:  # a SummaryWriter, imported late
    from torch.utils.tensorboard import SummaryWriter

    with _writing(log_dir):
        return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def config_text(config: dict[str, Any]) -> str:
    """The resolved config as a YAML code block (TensorBoard's text tab renders Markdown)."""
    import yaml

    from gdfit.render.jsonl import strict

    return "```yaml\n" + yaml.safe_dump(strict(config), sort_keys=False) + "```"


class TensorBoardRenderer:
    """A `Renderer` that writes one run's scalars and config to a TensorBoard log folder."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer = None
        self.last_step = 0

    def start(self, rec: records.StartRecord) -> None:
        if rec.resumed_from is not None:
            # go on from the checkpoint: steps logged after it by the run that was killed are dropped
            self.writer, self.last_step = _writer(self.log_dir, purge_step=rec.resumed_from + 1), rec.resumed_from
            return
        self.writer = _writer(self.log_dir)
        with _writing(self.log_dir):
            self.writer.add_text("config", config_text(rec.config), 0)
            self.writer.add_scalar("loss", rec.loss, 0)

    def step(self, rec: records.StepRecord) -> None:
        with _writing(self.log_dir):
            self.writer.add_scalar("loss", rec.loss, rec.iter)
            self.writer.add_scalar("lr", rec.lr, rec.iter)
            if rec.grad_norm is not None:
                self.writer.add_scalar("grad_norm", rec.grad_norm, rec.iter)
            for name, value in (rec.params or {}).items():  # a curve fit's parameters as they move
                self.writer.add_scalar(f"params/{name}", value, rec.iter)
        self.last_step = rec.iter

    def end(self, result: records.FitResult) -> None:
        with _writing(self.log_dir):
            if result.iters > self.last_step:  # the last update was not reported (--every 0 or N)
                self.writer.add_scalar("loss", result.loss, result.iters)
            summary = (f"**{result.status}** after {plural(result.iters, 'update')} ({result.stop_rule}); "
                       f"final loss {result.loss:.6g}")
            self.writer.add_text("result", summary, result.iters)
        self.abort()

    def abort(self) -> None:
        if self.writer is None:
            return
        with _writing(self.log_dir):
            self.writer.flush()
            self.writer.close()


def _text(value: Any) -> str:
    """A grid value as written on the command line: `0.05`, `random`, `[0.9,0.999]`."""
    from gdfit.render.jsonl import dumps

    return value if isinstance(value, str) else dumps(value)


def hparam_value(value: Any) -> float | str:
    """Numbers as numbers; anything else (names, lists such as betas) as its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return _text(value)


def run_name(index: int, params: dict[str, Any], width: int) -> str:
    """A folder name per run: its index (for order and uniqueness), then its grid values."""
    values = ",".join(f"{k}={_text(v)}" for k, v in params.items())
    return f"run{index:0{width}d}_" + re.sub(r"[^A-Za-z0-9._=,+\[\]-]", "_", values)


def run_metrics(result: records.RunRecord) -> dict[str, float]:
    loss = result.loss if math.isfinite(result.loss) else math.nan
    return {"hparam/loss": loss, "hparam/iters": float(result.iters),
            "hparam/converged": float(result.status == records.CONVERGED)}


def log_sweep(log_dir: Path, config: dict[str, Any], results: list[records.RunRecord]) -> None:
    """One `add_hparams` per run, each in its own subfolder; the shared config as text once."""
    log_dir = Path(log_dir)
    hparams = [{k: hparam_value(v) for k, v in r.params.items()} for r in results]
    # Every run lists the same choices for its text settings, so the HParams view can filter them.
    domains = {k: sorted({h[k] for h in hparams}) for k in (hparams[0] if hparams else {})
               if all(isinstance(h[k], str) for h in hparams)}
    width = len(str(max(len(results) - 1, 0)))
    writer = _writer(log_dir)
    with _writing(log_dir):
        writer.add_text("config", config_text(config), 0)
        for index, (result, values) in enumerate(zip(results, hparams)):
            writer.add_hparams(values, run_metrics(result), hparam_domain_discrete=domains,
                               run_name=run_name(index, result.params, width))
        writer.flush()
        writer.close()
