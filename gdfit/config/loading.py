"""Building the config: defaults < file < --set < flags, merged into one mapping, validated once."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gdfit.config.messages import config_error
from gdfit.config.model import FitConfig
from gdfit.errors import ConfigError
from gdfit.reading import CONFIG_BYTES, TooLarge, read_file, read_stream
from gdfit.config.yamlsource import Document, load_yaml


class Resolved(BaseModel):
    """A validated config plus where it came from (for messages and relative file paths)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: FitConfig
    source: str
    base_dir: Path

    def resolve_path(self, name: str) -> Path:
        """A target or init file path, relative to the config file's folder."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base_dir / path


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


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set a dotted key; a named option given as text (`adam`) grows into `{name: adam}`."""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def merge_config(path: str, overrides: list[str] = (), flags: dict[str, Any] | None = None) -> RawConfig:
    """File < --set < explicit flags, as one mapping (defaults come with validation)."""
    text, source, base_dir = read_config_text(path)
    doc = load_yaml(text, source)
    data = dict(doc.data)
    origins: dict[str, str] = {}
    for item in overrides:
        parts, value = parse_assignment(item)
        apply_override(data, parts, value)
        origins[parts[0]] = "--set"
    for key, value in (flags or {}).items():
        if value is not None:  # a dotted flag key sets a nested one: `holdout.fraction` for --holdout
            top = key.split(".")[0]
            apply_override(data, key.split("."), value)
            origins[top] = "--" + top.replace("_", "-")
    return RawConfig(data, source, base_dir, doc, origins)


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
    return Resolved(config=config, source=source, base_dir=base_dir)


def load_config(path: str, overrides: list[str] = (), flags: dict[str, Any] | None = None) -> Resolved:
    """Defaults < file < --set < explicit flags, validated once."""
    raw = merge_config(path, overrides, flags)
    return build_config(raw.data, source=raw.source, base_dir=raw.base_dir, doc=raw.doc, origins=raw.origins)
