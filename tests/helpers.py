"""Building problems in tests without the CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gdfit.config import build_config
from gdfit.engine.descent import Descent, every_n, prepare


def resolved(**data: Any):
    data.setdefault("device", "cpu")
    return build_config(data, source="test", base_dir=Path("."))


def fit(engine: str = "fused", every: int = 1, **data: Any):
    """Run a config dict to the end; returns (steps, result, descent)."""
    problem = prepare(resolved(engine=engine, **data))
    descent = Descent(problem, report=every_n(every))
    steps = list(descent.steps())
    return steps, descent.result, descent


def run_to_end(loop):
    """Run a loop, ignoring what the host sees on the way; returns its outcome."""
    for _ in loop.chunks():
        pass
    return loop.outcome


def render_human(width: int, steps, result, descent) -> str:
    """A run's steps and end through the human renderer, into a fixed-width console."""
    import io

    from rich.console import Console

    from gdfit.render.human import HumanRenderer

    buffer = io.StringIO()
    renderer = HumanRenderer(Console(file=buffer, width=width, color_system=None, force_terminal=False))
    renderer.start(descent.start)
    for step in steps:
        renderer.step(step)
    renderer.end(result)
    return buffer.getvalue()


def sockets_off_loopback(pids: set[int]) -> list[str]:
    """Every inet socket of these processes with an end outside 127.0.0.0/8, in words."""
    import ipaddress

    import psutil

    bad = []
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in connections:
            for address in (conn.laddr, conn.raddr):
                if address and ipaddress.ip_address(address.ip) not in ipaddress.ip_network("127.0.0.0/8"):
                    bad.append(f"pid {pid}: {conn.laddr} -> {conn.raddr} ({conn.status})")
    return bad


def assert_is_the_product(product, left, right, bias=None) -> None:
    """`product` is left @ right (+ bias) as any BLAS computes it: each entry within 2 gamma_k of
    sum_i |left_ri right_ic| (+ |bias_c|) of numpy's, k the number of terms and gamma_k = k u / (1 - k u)
    (Higham's bound on a k-term dot product's rounding, once for each of the two evaluations).
    Not a tolerance relative to the entry: an entry that cancels to near 0 has a large relative
    rounding error in any summation order, and BLAS libraries pick their order by CPU (an entry of
    1.4e-05 from terms of order 1 differs by 2.3e-12 relative between OpenBLAS's SkylakeX and
    Sandybridge kernels). A wrong product (a term dropped, a float32 rounding) is far outside."""
    import numpy as np

    product, left, right = (np.asarray(a) for a in (product, left, right))
    terms = left.shape[-1] + (bias is not None)
    u = np.finfo(product.dtype).eps / 2
    gamma = terms * u / (1 - terms * u)
    bias = 0.0 if bias is None else np.asarray(bias)
    expected = left @ right + bias
    size = np.abs(left) @ np.abs(right) + np.abs(bias)
    excess = np.abs(product - expected) - 2 * gamma * size
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
    assert np.all(excess <= 0), (f"entry {worst}: {product[worst]!r} vs {expected[worst]!r}, "
                                 f"allowed {2 * gamma * size[worst]:.3g}")


NO_TORCH_RUN = """
import sys
from gdfit.cli.app import main
try:
    code = main(sys.argv[2:])
except SystemExit as exit:
    code = exit.code
assert code == int(sys.argv[1]), code
print("torch" in sys.modules, file=sys.stderr)
"""


def run_without_torch(*args: str, code: int = 0, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`gdfit ARGS` in a fresh process that reports, last on stderr, whether torch was imported."""
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_RUN, str(code), *args], capture_output=True, text=True,
                          cwd=cwd or Path(__file__).resolve().parent.parent,
                          timeout=120, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc


def sigint_as_at_a_terminal() -> None:
    """In the child before it runs: SIGINT back to its default. A shell without job control (a CI
    script, `pytest ... &`) starts its background commands with SIGINT ignored, children inherit
    that, and Python then installs no KeyboardInterrupt handler: the Ctrl-C these tests send would
    be dropped and the paused process would wait for ever."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


DASK_NOISE = ("CancelledError", "Traceback", "distributed.", "8787", "already in use")


def dask_noise(stderr: str) -> list[str]:
    """The lines of `stderr` that come from Dask, not gdfit: its log lines (`distributed.worker ...`),
    its warnings (a dashboard port in use), tracebacks."""
    return [line for line in stderr.splitlines() if any(word in line for word in DASK_NOISE)]


def holding_port(port: int, host: str = "127.0.0.1"):
    """A context: `host:port` is taken while it lasts, by a listening socket of this process, or
    already by another process (taken all the same)."""
    import contextlib
    import socket

    stack = contextlib.ExitStack()
    sock = stack.enter_context(socket.socket())
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError:
        pass  # someone else listens there: the port is just as taken
    return stack
