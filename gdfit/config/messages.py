"""pydantic's ValidationError -> gdfit's ConfigError: one message, at the user's key and line."""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic import BaseModel, Discriminator, Tag, ValidationError
from pydantic.fields import FieldInfo

from gdfit.config.model import FitConfig
from gdfit.errors import ConfigError
from gdfit.config.yamlsource import Document, type_name


def config_error(err: ValidationError, source: str, doc: Document | None, origins: dict[str, str]) -> ConfigError:
    """Every problem in the config, each located by file line or by the flag that set the key: the
    most useful first, the others (`also`) in the order of the file."""
    by_key: dict[tuple, list[dict]] = {}  # a union reports one error per member for one key
    for error in err.errors():
        by_key.setdefault(tuple(locate(error["loc"])[0]), []).append(error)
    chosen = {loc: _most_useful(errors) for loc, errors in by_key.items()}
    best = _most_useful(list(chosen.values()))
    first = _located(next(loc for loc, e in chosen.items() if e is best), best, source, doc, origins)
    others = [_located(loc, e, source, doc, origins) for loc, e in chosen.items()
              if e is not best and not _explained(loc, e, chosen)]
    first.also = sorted(others, key=lambda p: (p.line is None, p.line or 0, p.column or 0))
    return first


def _located(loc: tuple, error: dict, source: str, doc: Document | None, origins: dict[str, str]) -> ConfigError:
    key = ".".join(str(p) for p in loc) if loc else None
    line = column = None
    where = source
    if loc and loc[0] in origins:
        where = origins[loc[0]]
    elif doc is not None:
        line, column = doc.position(tuple(loc))
    return ConfigError(_message(error), source=where, line=line, column=column, key=key)


def _explained(loc: tuple, error: dict, chosen: dict[tuple, dict]) -> bool:
    """A missing key beside an unknown one that is its misspelling (`targte:` for `target`): the
    unknown key's "did you mean 'target'?" says it all."""
    if error["type"] != "missing" or not loc:
        return False
    return any(e["type"] == "extra_forbidden" and other and other[:-1] == loc[:-1]
               and difflib.get_close_matches(str(loc[-1]), [str(other[-1])], n=1)
               for other, e in chosen.items())


def locate(loc: tuple) -> tuple[list[str | int], type[BaseModel] | None]:
    """The user's key path for pydantic's `loc`, and the model that holds the path's last key.

    pydantic puts union tags into `loc` (`optimizer.adam.eps`, `target.file.dtype`); the walk
    follows FitConfig's own fields and unions, so it knows which parts are tags and drops them.
    """
    path: list[str | int] = []
    holder: type[BaseModel] | None = FitConfig
    model: type[BaseModel] | None = FitConfig
    members: dict[str, Any] = {}
    for part in loc:
        if isinstance(part, str) and part in members:
            model, members = _as_model(members[part]), _named_members(members[part])
            continue
        if isinstance(part, str) and "[" in part:
            continue  # pydantic's name for a validator inside a plain union, e.g. `function-before[...]`
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        path.append(part)
        holder = model
        model = _as_model(field.annotation) if field else None
        members = _union_members(field) if field else {}
    return path, holder


def _named_members(annotation: Any) -> dict[str, Any]:
    """A union member that is itself a union of named models (`model`'s `named` tag): name -> model."""
    members = {}
    for member in get_args(annotation):
        base = get_args(member)[0] if get_args(member) and not _as_model(member) else member
        if _as_model(base) is not None and "name" in base.model_fields:
            members.update({name: base for name in get_args(base.model_fields["name"].annotation)})
    return members


def _as_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _union_members(field: FieldInfo) -> dict[str, Any]:
    """Tag -> member of a discriminated-union field; {} for any other field."""
    if isinstance(field.discriminator, str):
        return {get_args(m.model_fields[field.discriminator].annotation)[0]: m for m in get_args(field.annotation)}
    if isinstance(field.discriminator, Discriminator):
        members = {}
        for member in get_args(field.annotation):
            base, *metadata = get_args(member)
            members.update({m.tag: base for m in metadata if isinstance(m, Tag)})
        return members
    return {}


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    """The keys a mapping read into `model` may hold, in declaration order."""
    return list(model.model_fields) if model is not None else []


def _most_useful(errors: list[dict]) -> dict:
    # A union reports one error per member; our own validators' messages say most, then a
    # misspelt key (it usually explains a `missing` one beside it).
    for kind in ("value_error", "extra_forbidden"):
        for e in errors:
            if e["type"] == kind:
                return e
    return errors[0]


# pydantic's type errors in the user's words ("Input should be a valid dictionary or instance of
# DataSource" names a class of ours, not anything in their file)
EXPECTED = {
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list", "tuple_type": "a list", "string_type": "text", "int_type": "an integer",
    "int_parsing": "an integer", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
}


def _message(error: dict) -> str:
    kind = error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"])
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"got {error['input']!r}; {error['msg'].replace('Input should be', 'expected')}"
    expected = EXPECTED.get(kind)
    if expected:
        return f"expected {expected}, got {type_name(error.get('input'))}"
    return f"{error['msg']}, got {type_name(error.get('input'))}"


def _unknown_key(loc: tuple) -> str:
    name = str(loc[-1])
    _, holder = locate(loc)
    choices = _allowed_keys(holder)
    close = difflib.get_close_matches(name, choices, n=1)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    allowed = f" (allowed: {', '.join(choices)})" if choices else ""
    return f"unknown key {name!r}{guess}{allowed}"
