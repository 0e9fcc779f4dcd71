"""A config given to the Python API: a path, YAML text or a mapping, merged and validated as the
CLI merges and validates a file (`gdfit.config.loading`), with the same messages."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

from gdfit.config import RawConfig, Resolved, build_config, merge_document, read_config_text
from gdfit.config.yamlsource import Document, load_yaml
from gdfit.errors import ConfigError

ConfigLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]
"""A config file's path, the YAML text of one, or the mapping a YAML file would hold."""

SetLike = Union[Mapping[str, Any], Iterable[str], None]
"""Dotted keys to values (`{"optimizer.damping": 1e-2}`), or `KEY=VALUE` texts as `--set` takes."""

TEXT_SOURCE = "<config>"  # the name messages give a config that is not a file


def is_yaml_text(config: str) -> bool:
    """Whether a string is a config's YAML text rather than a file's path: text has a line break,
    a `key: value` pair or a flow mapping, none of which a path holds."""
    stripped = config.strip()
    return "\n" in stripped or ": " in stripped or stripped.startswith("{") or stripped.endswith(":")


def read_document(config: ConfigLike) -> tuple[Document, Path]:
    """The parsed config and the folder its relative file paths start from (the file's own folder,
    or the working directory for text and mappings)."""
    if isinstance(config, Mapping):
        return Document(data=copy.deepcopy(dict(config)), source=TEXT_SOURCE), Path.cwd()
    if isinstance(config, str) and is_yaml_text(config):
        return load_yaml(config, TEXT_SOURCE), Path.cwd()
    if isinstance(config, (str, os.PathLike)):
        text, source, base_dir = read_config_text(os.fspath(config))
        return load_yaml(text, source), base_dir
    raise ConfigError(f"expected a config file's path, YAML text or a mapping, got {type(config).__name__}",
                      source="config")


def merge(config: ConfigLike, set: SetLike = None, overrides: Mapping[str, Any] | None = None) -> RawConfig:
    """The config < `set` (dotted keys, as --set) < keyword overrides (top-level keys), unvalidated."""
    doc, base_dir = read_document(config)
    texts: list[str] = []
    values: dict[str, Any] = {}
    if isinstance(set, Mapping):
        values = dict(set)
    elif isinstance(set, str):
        texts = [set]
    elif set is not None:
        texts = list(set)
    return merge_document(doc, base_dir, texts, dict(overrides or {}), values, api=True)


def resolve(config: ConfigLike, set: SetLike = None, overrides: Mapping[str, Any] | None = None) -> Resolved:
    """Merged and validated once, as `gdfit run` builds its config: defaults < config < set < overrides."""
    raw = merge(config, set, overrides)
    return build_config(raw.data, source=raw.source, base_dir=raw.base_dir, doc=raw.doc, origins=raw.origins)
