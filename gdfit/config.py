"""The one typed, frozen config: defaults < file < --set < flags, validated with precise messages."""

from __future__ import annotations

import difflib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gdfit.errors import ConfigError
from gdfit.yamlsource import Document, load_yaml, type_name

MAX_INLINE_ELEMENTS = 10_000
MAX_RANK = 8
DEVICE_HELP = "auto, cpu, cuda, cuda:N, mps"
DTYPES = ("float32", "float64", "float16", "bfloat16")
DtypeName = Literal["float32", "float64", "float16", "bfloat16"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- numbers


def _number(value: Any) -> float:
    """Accept ints and floats only; YAML booleans and text are errors, not 1.0 or NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type_name(value)}")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type_name(value)}")
    return value


def _finite(value: Any) -> float:
    number = _number(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {number}")
    return number


Number = Annotated[float, BeforeValidator(_finite)]
Integer = Annotated[int, BeforeValidator(_integer)]


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be a number > 0, got {value:g}")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value:g}")
    return value


def _unit_interval(value: float) -> float:
    if not 0 <= value < 1:
        raise ValueError(f"must be in [0, 1), got {value:g}")
    return value


def positive(v: Any) -> float:
    return _positive(_finite(v))


def non_negative(v: Any) -> float:
    return _non_negative(_finite(v))


def unit_interval(v: Any) -> float:
    return _unit_interval(_finite(v))


def non_negative_int(v: Any) -> int:
    n = _integer(v)
    if n < 0:
        raise ValueError(f"must be an integer >= 0, got {n}")
    return n


PositiveNumber = Annotated[float, BeforeValidator(positive)]
NonNegativeNumber = Annotated[float, BeforeValidator(non_negative)]
UnitInterval = Annotated[float, BeforeValidator(unit_interval)]
NonNegativeInt = Annotated[int, BeforeValidator(non_negative_int)]


# ---------------------------------------------------------------- tensors


def _where(index: tuple[int, ...]) -> str:
    """`row 2, column 3` for matrices, `element 4` for vectors, `[1][2][3]` beyond (1-based)."""
    if len(index) == 1:
        return f"element {index[0] + 1}"
    if len(index) == 2:
        return f"row {index[0] + 1}, column {index[1] + 1}"
    return "".join(f"[{i + 1}]" for i in index)


def _shape_of(value: Any, index: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Shape of a rectangular nested list of finite numbers; raises ValueError saying where not."""
    if not isinstance(value, list):
        try:
            _finite(value)
        except ValueError as err:
            raise ValueError(f"{_where(index)}: {err}" if index else str(err)) from None
        return ()
    if not value:
        raise ValueError(f"{_where(index) + ' ' if index else 'the matrix '}is empty")
    shapes = [_shape_of(item, index + (i,)) for i, item in enumerate(value)]
    first = shapes[0]
    for i, shape in enumerate(shapes[1:], start=2):
        if shape != first:
            if len(shape) == len(first) == 1 and not index:
                raise ValueError(f"ragged matrix: row {i} has {shape[0]} values, row 1 has {first[0]}")
            raise ValueError(f"ragged nesting: item {i} has shape {list(shape)}, item 1 has {list(first)}")
    return (len(value),) + first


def _inline_tensor(value: Any) -> Any:
    shape = _shape_of(value)
    if len(shape) > MAX_RANK:
        raise ValueError(f"has {len(shape)} dimensions, at most {MAX_RANK} are supported")
    if math.prod(shape) > MAX_INLINE_ELEMENTS:
        raise ValueError(
            f"inline data has {math.prod(shape):,} elements, more than {MAX_INLINE_ELEMENTS:,}; "
            "put it in a file and use {file: PATH}"
        )
    return value


def shape_of(value: Any) -> tuple[int, ...]:
    """Shape of an already validated inline tensor."""
    return _shape_of(value)


class FileSource(_Frozen):
    """`{file: PATH}`: .csv/.txt, .npy or .pt, relative to the config file's folder."""

    file: str
    dtype: DtypeName | None = None


def _shape_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"shape must be a list of positive integers like [3, 3], got {type_name(value)}")
    dims = [_integer(v) for v in value]
    if any(d <= 0 for d in dims) or len(dims) > MAX_RANK:
        raise ValueError(f"shape must be 1 to {MAX_RANK} positive integers, got {dims}")
    return dims


class RandomSpec(_Frozen):
    shape: Annotated[list[int], BeforeValidator(_shape_list)]
    seed: Integer = 0
    low: Number = 0.0
    high: Number = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> RandomSpec:
        if not self.high > self.low:
            raise ValueError(f"high must be greater than low, got low={self.low:g}, high={self.high:g}")
        return self


class RandomSource(_Frozen):
    """`{random: {shape: [..], seed: N, low: 0, high: 1}}`: uniform synthetic data."""

    random: RandomSpec
    dtype: DtypeName | None = None


InlineTensor = Annotated[Any, BeforeValidator(_inline_tensor)]


def _tensor_spec(value: Any) -> Any:
    if isinstance(value, dict):
        if "file" in value:
            return FileSource.model_validate(value)
        if "random" in value:
            return RandomSource.model_validate(value)
        raise ValueError(f"expected a matrix, {{file: PATH}} or {{random: {{shape: [..]}}}}, got keys {sorted(value)}")
    return _inline_tensor(value)


TensorSpec = Annotated[Union[FileSource, RandomSource, Any], BeforeValidator(_tensor_spec)]


class NamedInit(_Frozen):
    """A generated start: `random` (uniform [0, 1)), `zeros`, `ones`, or `normal` with mean/std."""

    name: Literal["random", "zeros", "ones", "normal"]
    mean: Number = 0.0
    std: PositiveNumber = 1.0
    dtype: DtypeName | None = None


INIT_NAMES = ("random", "zeros", "ones", "normal")


def _init_spec(value: Any) -> Any:
    if isinstance(value, str):
        _choose("init", value, INIT_NAMES)
        return NamedInit(name=value)
    if isinstance(value, dict) and "name" in value:
        _choose("init", value["name"], INIT_NAMES)
        return NamedInit.model_validate(value)
    return _tensor_spec(value)


# ---------------------------------------------------------------- named options


def _choose(what: str, name: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(name, str):
        raise ValueError(f"expected one of {', '.join(choices)}; got {type_name(name)}")
    if name not in choices:
        close = difflib.get_close_matches(name, choices, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {what} {name!r}{guess}; choose one of: {', '.join(choices)}")
    return name


def _named(what: str, choices: tuple[str, ...]):
    """Before-validator turning `adam` into `{name: adam}` and checking the name first."""

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise ValueError(f"expected a {what} name or a mapping with `name:`, got {type_name(value)}")
        if "name" not in value:
            raise ValueError(f"a {what} mapping needs `name:`, one of: {', '.join(choices)}")
        _choose(what, value["name"], choices)
        return value

    return BeforeValidator(normalise)


class GD(_Frozen):
    """The tutorial's loop: x = x - lr * grad."""

    name: Literal["gd"] = "gd"


class Momentum(_Frozen):
    """Heavy-ball momentum, as torch.optim.SGD(momentum=..., dampening=...)."""

    name: Literal["momentum"]
    momentum: UnitInterval = 0.9
    dampening: UnitInterval = 0.0


class Nesterov(_Frozen):
    """Nesterov momentum, as torch.optim.SGD(momentum=..., nesterov=True)."""

    name: Literal["nesterov"]
    momentum: UnitInterval = 0.9


def _betas(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"betas must be two numbers like [0.9, 0.999], got {type_name(value)}")
    return (unit_interval(value[0]), unit_interval(value[1]))


class Adam(_Frozen):
    """Adam, as torch.optim.Adam."""

    name: Literal["adam"]
    betas: Annotated[tuple[float, float], BeforeValidator(_betas)] = (0.9, 0.999)
    eps: PositiveNumber = 1e-8


class RMSprop(_Frozen):
    """RMSprop, as torch.optim.RMSprop."""

    name: Literal["rmsprop"]
    alpha: UnitInterval = 0.99
    eps: PositiveNumber = 1e-8


OPTIMIZERS = ("gd", "momentum", "nesterov", "adam", "rmsprop")
Optimizer = Annotated[
    Union[GD, Momentum, Nesterov, Adam, RMSprop], Field(discriminator="name"), _named("optimizer", OPTIMIZERS)
]


class MSE(_Frozen):
    name: Literal["mse"] = "mse"


class L1(_Frozen):
    name: Literal["l1"]


class Huber(_Frozen):
    name: Literal["huber"]
    delta: PositiveNumber = 1.0


class SmoothL1(_Frozen):
    name: Literal["smooth_l1"]
    beta: PositiveNumber = 1.0


LOSSES = ("mse", "l1", "huber", "smooth_l1")
Loss = Annotated[Union[MSE, L1, Huber, SmoothL1], Field(discriminator="name"), _named("loss", LOSSES)]


class Constant(_Frozen):
    name: Literal["constant"] = "constant"


class StepLR(_Frozen):
    """lr * gamma ** (update // step_size), as lr_scheduler.StepLR."""

    name: Literal["step"]
    step_size: Annotated[int, BeforeValidator(lambda v: _positive_int(v))] = 100
    gamma: PositiveNumber = 0.1


class ExponentialLR(_Frozen):
    """lr * gamma ** update, as lr_scheduler.ExponentialLR."""

    name: Literal["exponential"]
    gamma: PositiveNumber = 0.99


class CosineLR(_Frozen):
    """Cosine annealing from lr to eta_min over t_max updates, as lr_scheduler.CosineAnnealingLR."""

    name: Literal["cosine"]
    t_max: Annotated[int, BeforeValidator(lambda v: _positive_int(v))] | None = None
    eta_min: NonNegativeNumber = 0.0


def _positive_int(v: Any) -> int:
    n = _integer(v)
    if n <= 0:
        raise ValueError(f"must be an integer > 0, got {n}")
    return n


SCHEDULES = ("constant", "step", "exponential", "cosine")
Schedule = Annotated[
    Union[Constant, StepLR, ExponentialLR, CosineLR], Field(discriminator="name"), _named("schedule", SCHEDULES)
]


def _device(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected one of {DEVICE_HELP}; got {type_name(value)}")
    base, _, index = value.partition(":")
    if base in ("auto", "cpu", "mps") and not index:
        return value
    if base == "cuda" and (not index or index.isdigit()):
        return value
    raise ValueError(f"unknown device {value!r}; choose one of: {DEVICE_HELP}")


def _dtype(value: Any) -> str:
    return _choose("dtype", value, DTYPES)


# ---------------------------------------------------------------- the config


class FitConfig(_Frozen):
    """Everything one run needs; built once, never changed."""

    target: TensorSpec
    init: Annotated[Union[NamedInit, FileSource, RandomSource, Any], BeforeValidator(_init_spec)] = NamedInit(
        name="random"
    )
    seed: Integer = 0
    loss: Loss = MSE()
    optimizer: Optimizer = GD()
    learning_rate: PositiveNumber = 1.0
    schedule: Schedule = Constant()
    threshold: NonNegativeNumber = 1.0e-5
    max_iters: NonNegativeInt = 10_000
    timeout_s: PositiveNumber | None = None
    patience: Annotated[int, BeforeValidator(_positive_int)] | None = None
    min_rel_improvement: NonNegativeNumber = 1.0e-6
    divergence_factor: Annotated[float, BeforeValidator(lambda v: _greater_than_one(v))] = 1.0e6
    device: Annotated[str, BeforeValidator(_device)] = "auto"
    dtype: Annotated[str, BeforeValidator(_dtype)] = "float32"
    engine: Literal["auto", "autograd", "fused"] = "auto"
    sweep: Annotated[dict[str, Any], BeforeValidator(lambda v: _sweep_section(v))] | None = None

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: Any) -> Any:
        return _choose("engine", value, ("auto", "autograd", "fused"))

    @field_validator("init", mode="after")
    @classmethod
    def _init_matches_target(cls, init: Any, info: ValidationInfo) -> Any:
        target = info.data.get("target")
        if _is_inline(init) and target is not None and _is_inline(target):
            ti, tt = shape_of(init), shape_of(target)
            if ti != tt:
                raise ValueError(f"shape {list(ti)} differs from the target's shape {list(tt)}")
        return init


def _sweep_section(value: Any) -> dict[str, Any]:
    """`sweep:` is read by `gdfit sweep` (grid values are checked there); `run` ignores it."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of KEY: values, got {type_name(value)}")
    return value


def _greater_than_one(v: Any) -> float:
    n = _finite(v)
    if n <= 1:
        raise ValueError(f"must be a number > 1, got {n:g}")
    return n


def _is_inline(spec: Any) -> bool:
    return not isinstance(spec, (FileSource, RandomSource, NamedInit))


KEYS = tuple(FitConfig.model_fields)


# ---------------------------------------------------------------- building


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


def read_config_text(path: str) -> tuple[str, str, Path]:
    """Text, display name and base folder of CONFIG (`-` reads standard input)."""
    if path == "-":
        return sys.stdin.read(), "<stdin>", Path.cwd()
    file = Path(path)
    if file.is_dir():
        raise ConfigError("is a directory, not a config file", source=path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such config file", source=path) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err.strerror}", source=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start})", source=path) from None
    if "\x00" in text:
        raise ConfigError("holds NUL bytes; it is not a YAML text file", source=path)
    return text, path, file.resolve().parent


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
        raise _config_error(err, source, doc, origins or {}) from None
    return Resolved(config=config, source=source, base_dir=base_dir)


@dataclass
class RawConfig:
    """A config mapping merged from file, --set and flags, before validation."""

    data: dict[str, Any]
    source: str
    base_dir: Path
    doc: Document
    origins: dict[str, str]


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
        if value is not None:
            data[key] = value
            origins[key] = "--" + key.replace("_", "-")
    return RawConfig(data, source, base_dir, doc, origins)


def load_config(path: str, overrides: list[str] = (), flags: dict[str, Any] | None = None) -> Resolved:
    """Defaults < file < --set < explicit flags, validated once."""
    raw = merge_config(path, overrides, flags)
    return build_config(raw.data, source=raw.source, base_dir=raw.base_dir, doc=raw.doc, origins=raw.origins)


def _config_error(err: ValidationError, source: str, doc: Document | None, origins: dict[str, str]) -> ConfigError:
    first = _most_useful(err.errors())
    loc = _clean_loc(first["loc"])
    key = ".".join(str(p) for p in loc) if loc else None
    message = _message(first)
    line = column = None
    where = source
    if loc and loc[0] in origins:
        where = origins[loc[0]]
    elif doc is not None:
        line, column = doc.position(tuple(loc))
    more = len(err.errors()) - 1
    hint = f"{more} more problem(s) after this one" if more > 0 else None
    return ConfigError(message, source=where, line=line, column=column, key=key, hint=hint)


def _clean_loc(loc: tuple) -> list[str | int]:
    """The user's key path: drop pydantic's union tags (`optimizer.adam.eps` -> `optimizer.eps`)."""
    tags = {"optimizer": OPTIMIZERS, "loss": LOSSES, "schedule": SCHEDULES}
    internal = ("FileSource", "RandomSource", "NamedInit", "any")
    path: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and ("[" in part or part in internal):
            continue
        if i == 1 and part in tags.get(loc[0], ()):
            continue
        path.append(part)
    return path


def _most_useful(errors: list[dict]) -> dict:
    # a union reports one error per member; a value error from our own validators says most
    for e in errors:
        if e["type"] == "value_error":
            return e
    return errors[0]


def _message(error: dict) -> str:
    kind = error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        parent = error["loc"][:-1]
        choices = _allowed_keys(parent)
        close = difflib.get_close_matches(name, choices, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {name!r}{guess} (allowed: {', '.join(choices)})"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"got {error['input']!r}; {error['msg'].replace('Input should be', 'expected')}"
    return f"{error['msg']}, got {type_name(error.get('input'))}"


def _allowed_keys(parent: tuple) -> list[str]:
    models: dict[str, type[BaseModel]] = {
        "gd": GD, "momentum": Momentum, "nesterov": Nesterov, "adam": Adam, "rmsprop": RMSprop,
        "mse": MSE, "l1": L1, "huber": Huber, "smooth_l1": SmoothL1,
        "constant": Constant, "step": StepLR, "exponential": ExponentialLR, "cosine": CosineLR,
        "FileSource": FileSource, "RandomSource": RandomSource, "NamedInit": NamedInit, "random": RandomSpec,
    }
    for part in reversed(parent):
        if isinstance(part, str) and part in models:
            return list(models[part].model_fields)
    if not parent:
        return list(KEYS)
    return []
