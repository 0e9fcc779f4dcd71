"""Dask from the user's side: a scheduler address checked before a sweep starts (its form, then a
TCP connect that gives up after a few seconds), and Dask's own log lines and warnings kept off the
user's terminal (gdfit reports what went wrong in its own words)."""

from __future__ import annotations

import logging
import os
import re
import socket
import warnings

from gdfit.errors import GdfitError

CONNECT_TIMEOUT_S = 5.0  # a scheduler that is there answers a connect at once
SCHEMES = ("tcp", "tls")
_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z]+)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")


def parse_address(address: str, key: str = "--address") -> tuple[str, str, int]:
    """(scheme, host, port) of `tcp://HOST:PORT` (or `HOST:PORT`, or `tls://...`); anything else is refused."""
    match = _ADDRESS.match(address.strip())
    if match is None:
        raise GdfitError(f"{address!r} is not a scheduler address; expected tcp://HOST:PORT (as `dask scheduler` "
                         "prints it)", key=key)
    scheme = match.group("scheme") or "tcp"
    if scheme not in SCHEMES:
        raise GdfitError(f"{address!r}: gdfit joins schedulers over {' or '.join(SCHEMES)}, not {scheme}", key=key)
    port = int(match.group("port"))
    if not 0 < port < 65536:
        raise GdfitError(f"{address!r}: port {port} is not between 1 and 65535", key=key)
    return scheme, match.group("host").strip("[]"), port


def check_address(address: str, key: str = "--address", timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse (exit 2), within `timeout_s`, an address with no scheduler listening at it."""
    _scheme, host, port = parse_address(address, key)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.timeout:
        raise GdfitError(f"no Dask scheduler answered at {address} within {timeout_s:g} s", key=key,
                         hint="start one with `dask scheduler`, or leave out --address for a local cluster") from None
    except OSError as err:
        raise GdfitError(f"cannot reach a Dask scheduler at {address}: {err.strerror or err}", key=key,
                         hint="start one with `dask scheduler`, or leave out --address for a local cluster") from None
    if not _handshake(address, timeout_s):
        raise GdfitError(f"the server at {address} does not answer as a Dask scheduler does (no Dask handshake "
                         f"within {timeout_s:g} s)", key=key,
                         hint="check the address (`dask scheduler` prints it), or leave out --address for a local cluster")


def _handshake(address: str, timeout_s: float) -> bool:
    """Whether Dask's own connect (with its handshake) succeeds within `timeout_s`; a server of
    another kind answers with bytes Dask may read as any length, so every failure means no."""
    import asyncio

    from distributed.comm import connect

    async def probe() -> None:
        comm = await connect(address, timeout=timeout_s)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), timeout_s))
    except Exception:  # noqa: BLE001 (refused, timed out, garbage read as a 3 EiB frame: all the same answer)
        return False
    return True


def quiet() -> None:
    """Keep Dask's log lines and warnings (a busy dashboard port, a restarted worker) off stderr, in
    this process and in the worker processes it starts (they read the environment)."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    # a PYTHONWARNINGS module is matched whole: the modules that warn at a worker's start
    present = os.environ.get("PYTHONWARNINGS", "").split(",")
    ours = [f"ignore:::{module}" for module in ("distributed", "distributed.node", "distributed.utils")]
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, present + [w for w in ours if w not in present]))
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"distributed(\..*)?$")
