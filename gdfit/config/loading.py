"""Building the config: defaults < file < --set < flags, merged into one mapping, validated once."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from gdfit.config.messages import config_error
from gdfit.config.model import FitConfig
from gdfit.errors import ConfigError, GdfitError
from gdfit.reading import CONFIG_BYTES, TooLarge, read_file, read_stream
from gdfit.config.yamlsource import Document, load_yaml


class Resolved(BaseModel):
    """A validated config plus where it came from (for messages and relative file paths)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: FitConfig
    source: str
    base_dir: Path
    # where each key stands in the file, and which top-level keys --set or a flag gave instead
    _doc: Document | None = PrivateAttr(default=None)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def resolve_path(self, name: str) -> Path:
        """A target or init file path, relative to the config file's folder."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @contextmanager
    def locating(self) -> Iterator[None]:
        """Errors about this config's keys found once its files are read (a sigma column that
        holds a 0, a target column the data lack) get the key's line:column in the file, as
        validation's errors have them; not a key that --set or a flag gave."""
        try:
            yield
        except GdfitError as err:
            if err.source == self.source and err.line is None and err.key and self._doc is not None:
                path = tuple(int(part) if part.isdigit() else part for part in err.key.split("."))
                if path[0] not in self._origins:
                    err.line, err.column = self._doc.position(path)
            raise


@dataclass
class RawConfig:
    """A config mapping merged from file, --set and flags, before validation."""

    data: dict[str, Any]
    source: str
    base_dir: Path
    doc: Document
    origins: dict[str, str]


def read_config_text(path: str) -> tuple[str, str, Path]:
    """Text, display name and base folder of CONFIG (`-` reads standard input), at most
    CONFIG_BYTES of it: a larger file is refused unread, a larger stream once it passes the limit."""
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            if sys.stdin is None or getattr(sys.stdin, "closed", False):
                raise ConfigError("standard input is closed: there is no config to read from it", source=source,
                                  hint="give the config file's path, or pipe the config in (gdfit run - < config.yaml)")
            stream = getattr(sys.stdin, "buffer", sys.stdin)
            raw = read_stream(stream, CONFIG_BYTES)
        else:
            raw = read_file(path, CONFIG_BYTES)
    except TooLarge as err:
        raise ConfigError(f"the config {err.describe()}", source=source,
                          hint="put large matrices in a file and use `target: {file: data.npy}`") from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", source=path) from None
    except FileNotFoundError:
        raise ConfigError("no such config file", source=path) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err.strerror or err}", source=source) from None
    if isinstance(raw, bytes) and raw.startswith(b"PK\x03\x04"):  # torch.save's ZIP: a checkpoint, as CONFIG
        raise ConfigError("is a ZIP archive (a gdfit checkpoint?), not a YAML config", source=source,
                          hint=f"continue a checkpoint with gdfit run CONFIG --resume {path} --checkpoint {path}")
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"not UTF-8 text (byte {err.start})", source=source) from None
    if "\x00" in text:
        raise ConfigError("holds NUL bytes; it is not a YAML text file", source=source)
    base_dir = Path.cwd() if path == "-" else Path(path).resolve().parent
    return text, source, base_dir


def parse_assignment(item: str, flag: str = "--set") -> tuple[list[str], Any]:
    """`a.b=VALUE` -> (["a", "b"], VALUE read as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected KEY=VALUE, got {item!r}", source=flag)
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"bad key {key!r}", source=flag)
    value = load_yaml(raw, f"{flag} {key}", require_mapping=False).data if raw.strip() else None
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str], value: Any, flag: str = "--set") -> None:
    """Set a dotted key; a named option given as text (`adam`) grows into `{name: adam}`. A number
    reaches into a list that is already there (`datasets.0.model.expr`); any other key replaces a
    list with a mapping (`target.file` where the target was a matrix). The mappings and lists on
    the way are copied, so that the document the key came from is never changed."""
    node: dict[str, Any] | list[Any] = data
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, parts[: depth + 1], parts[depth + 1].isdigit(), flag)
    _put(node, parts[-1], value, parts, flag)


def _child(node: dict[str, Any] | list[Any], part: str, path: list[str], into_list: bool, flag: str
           ) -> dict[str, Any] | list[Any]:
    """node[part] as a fresh mapping, or a fresh list when the next key is a position in it, put in
    its place (text grows into {name: text})."""
    child = node[_index(node, part, path, flag)] if isinstance(node, list) else node.get(part)
    if isinstance(child, list) and into_list:
        child = list(child)
    elif isinstance(child, dict):
        child = dict(child)
    else:
        child = {"name": child} if isinstance(child, str) else {}
    _put(node, part, child, path, flag)
    return child


def _index(node: list[Any], part: str, path: list[str], flag: str) -> int:
    """A list's position from a key part: 0 up to its length - 1."""
    if int(part) >= len(node):
        raise ConfigError(f"{'.'.join(path[:-1])} has {len(node)} entries (positions 0..{len(node) - 1})",
                          source=flag, key=".".join(path))
    return int(part)


def _put(node: dict[str, Any] | list[Any], part: str, value: Any, path: list[str], flag: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, path, flag)] = value
    else:
        node[part] = value


def merge_config(path: str, overrides: list[str] = (), flags: dict[str, Any] | None = None) -> RawConfig:
    """File < --set < explicit flags, as one mapping (defaults come with validation)."""
    text, source, base_dir = read_config_text(path)
    return merge_document(load_yaml(text, source), base_dir, overrides, flags)


def merge_document(
    doc: Document,
    base_dir: Path,
    overrides: list[str] = (),
    flags: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    api: bool = False,
) -> RawConfig:
    """A parsed config < `overrides` (`KEY=VALUE` text, as --set) < `values` (dotted keys to values
    already read, as the Python API's `set=` mapping) < `flags`. Messages name where an override
    came from: the CLI's `--set` and `--max-iters`, or, with `api`, the Python API's `set=` and
    `max_iters=`."""
    data = dict(doc.data)
    origins: dict[str, str] = {}
    set_label = "set=" if api else "--set"
    for item in overrides:
        parts, value = parse_assignment(item, set_label)
        apply_override(data, parts, value)
        origins[parts[0]] = set_label
    for key, value in (values or {}).items():
        parts = str(key).split(".")
        if any(not p.strip() for p in parts):
            raise ConfigError(f"bad key {key!r}", source=set_label)
        apply_override(data, parts, value)
        origins[parts[0]] = set_label
    for key, value in (flags or {}).items():
        if value is not None or api:  # a flag left out is None; the API's keyword None sets null
            # a dotted flag key sets a nested one: `holdout.fraction` for --holdout
            top = key.split(".")[0]
            apply_override(data, key.split("."), value)
            origins[top] = f"{top}=" if api else "--" + top.replace("_", "-")
    return RawConfig(data, doc.source, base_dir, doc, origins)


def build_config(
    data: dict[str, Any],
    *,
    source: str,
    base_dir: Path,
    doc: Document | None = None,
    origins: dict[str, str] | None = None,
) -> Resolved:
    """Validate a merged config mapping; turn pydantic's errors into gdfit's located messages."""
    try:
        config = FitConfig.model_validate(data)
    except ValidationError as err:
        raise config_error(err, source, doc, origins or {}) from None
    resolved = Resolved(config=config, source=source, base_dir=base_dir)
    resolved._doc, resolved._origins = doc, dict(origins or {})
    return resolved


DEFAULT_CONFIDENCE = [1, 2]  # `--ci` on a config without `confidence`: 1 and 2 sigma


def load_config(path: str, overrides: list[str] = (), flags: dict[str, Any] | None = None,
                confidence: bool = False) -> Resolved:
    """Defaults < file < --set < explicit flags, validated once. `confidence` (--ci): intervals at
    the config's levels, or at DEFAULT_CONFIDENCE when it gives none."""
    raw = merge_config(path, overrides, flags)
    if confidence and raw.data.get("confidence") is None:
        raw.data["confidence"], raw.origins["confidence"] = list(DEFAULT_CONFIDENCE), "--ci"
    return build_config(raw.data, source=raw.source, base_dir=raw.base_dir, doc=raw.doc, origins=raw.origins)
