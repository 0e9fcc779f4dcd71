"""The config's pydantic models: every key, its type, its default and its checks.

Each named option (optimizer, loss, schedule, init) is a small frozen model whose `name` is a
Literal; the tuples of valid names are read back from those Literals, so a name lives in one place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gdfit.config.values import (
    Integer,
    NonNegativeInt,
    NonNegativeNumber,
    Number,
    PositiveInt,
    PositiveNumber,
    Seed,
    UnitInterval,
    choose,
    finite,
    greater_than_one,
    inline_tensor,
    shape_list,
    shape_of,
    unit_interval,
)
from gdfit.yamlsource import type_name

DEVICE_HELP = "auto, cpu, cuda, cuda:N, mps"
DtypeName = Literal["float32", "float64", "float16", "bfloat16"]
InitName = Literal["random", "zeros", "ones", "normal"]
EngineName = Literal["auto", "autograd", "fused"]
DTYPES: tuple[str, ...] = get_args(DtypeName)
INIT_NAMES: tuple[str, ...] = get_args(InitName)
ENGINES: tuple[str, ...] = get_args(EngineName)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- named choices


def names_of(models: tuple[type[BaseModel], ...]) -> tuple[str, ...]:
    """The `name` Literal of each model, in order: the valid names of a named option."""
    return tuple(get_args(model.model_fields["name"].annotation)[0] for model in models)


def _named(what: str, models: tuple[type[BaseModel], ...]):
    """Field type for a named option: `adam` grows into `{name: adam}`, the name is checked first."""
    choices = names_of(models)
    article = "an" if what[0] in "aeiou" else "a"

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise ValueError(f"expected {article} {what} name or a mapping with `name:`, got {type_name(value)}")
        if "name" not in value:
            raise ValueError(f"{article} {what} mapping needs `name:`, one of: {', '.join(choices)}")
        choose(what, value["name"], choices)
        return value

    return Annotated[Union[models], Field(discriminator="name"), BeforeValidator(normalise)]


# ---------------------------------------------------------------- target and init


class FileSource(_Frozen):
    """`{file: PATH}`: .csv/.txt, .npy or .pt, relative to the config file's folder."""

    file: str
    dtype: DtypeName | None = None


class RandomSpec(_Frozen):
    shape: Annotated[list[int], BeforeValidator(shape_list)]
    seed: Seed = 0
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


class NamedInit(_Frozen):
    """A generated start: `random` (uniform [0, 1)), `zeros`, `ones`, or `normal` with mean/std."""

    name: InitName
    mean: Number = 0.0
    std: PositiveNumber = 1.0
    dtype: DtypeName | None = None

    @model_validator(mode="after")
    def _settings_apply(self) -> NamedInit:
        # a setting that changes nothing is a mistake worth saying (`mean` on a uniform start)
        unused = [k for k in ("mean", "std") if k in self.model_fields_set and self.name != "normal"]
        if "dtype" in self.model_fields_set and self.name in ("zeros", "ones"):
            unused.append("dtype")
        if unused:
            raise ValueError(f"{' and '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to "
                             f"init {self.name!r}" + ("; mean and std belong to init 'normal'"
                                                     if "dtype" not in unused else ""))
        return self


def _target_tag(value: Any) -> str:
    """Which member of the target union `value` is (asked of input mappings and of built models)."""
    if isinstance(value, FileSource) or (isinstance(value, dict) and "file" in value):
        return "file"
    if isinstance(value, RandomSource) or (isinstance(value, dict) and "random" in value):
        return "random"
    return "inline"


def _init_tag(value: Any) -> str:
    if isinstance(value, NamedInit) or (isinstance(value, dict) and "name" in value):
        return "name"
    return _target_tag(value)


def _target_spec(value: Any) -> Any:
    if isinstance(value, dict) and "file" not in value and "random" not in value:
        raise ValueError(f"expected a matrix, {{file: PATH}} or {{random: {{shape: [..]}}}}, got keys {sorted(value)}")
    return value


def _init_spec(value: Any) -> Any:
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and "name" in value:
        choose("init", value["name"], INIT_NAMES)
        return value
    return _target_spec(value)


InlineTensor = Annotated[Any, BeforeValidator(inline_tensor)]
_FILE, _RANDOM, _INLINE = (
    Annotated[FileSource, Tag("file")],
    Annotated[RandomSource, Tag("random")],
    Annotated[InlineTensor, Tag("inline")],
)
# Tagged unions, so that an error inside a member names that member (for "allowed: ..." lists).
TensorSpec = Annotated[
    Union[_FILE, _RANDOM, _INLINE], Field(discriminator=Discriminator(_target_tag)), BeforeValidator(_target_spec)
]
InitSpec = Annotated[
    Union[Annotated[NamedInit, Tag("name")], _FILE, _RANDOM, _INLINE],
    Field(discriminator=Discriminator(_init_tag)),
    BeforeValidator(_init_spec),
]


def _is_inline(spec: Any) -> bool:
    return not isinstance(spec, (FileSource, RandomSource, NamedInit))


# ---------------------------------------------------------------- optimizers


class GD(_Frozen):
    """The tutorial's loop: x = x - lr * grad."""

    name: Literal["gd"] = "gd"


class Momentum(_Frozen):
    """Heavy-ball momentum, as torch.optim.SGD(momentum=..., dampening=...)."""

    name: Literal["momentum"]
    momentum: UnitInterval = 0.9
    dampening: UnitInterval = 0.0


def _nesterov_momentum(value: Any) -> float:
    # torch.optim.SGD refuses nesterov=True with momentum 0, and the update would be plain gd
    number = finite(value)
    if not 0 < number < 1:
        raise ValueError(f"must be in (0, 1) for nesterov, got {number:g}; for plain descent use optimizer: gd")
    return number


class Nesterov(_Frozen):
    """Nesterov momentum, as torch.optim.SGD(momentum=..., nesterov=True)."""

    name: Literal["nesterov"]
    momentum: Annotated[float, BeforeValidator(_nesterov_momentum)] = 0.9


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


# ---------------------------------------------------------------- losses


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


# ---------------------------------------------------------------- schedules


class Constant(_Frozen):
    name: Literal["constant"] = "constant"


class StepLR(_Frozen):
    """lr * gamma ** (update // step_size), as lr_scheduler.StepLR."""

    name: Literal["step"]
    step_size: PositiveInt = 100
    gamma: PositiveNumber = 0.1


class ExponentialLR(_Frozen):
    """lr * gamma ** update, as lr_scheduler.ExponentialLR."""

    name: Literal["exponential"]
    gamma: PositiveNumber = 0.99


class CosineLR(_Frozen):
    """Cosine annealing from lr to eta_min over t_max updates, as lr_scheduler.CosineAnnealingLR."""

    name: Literal["cosine"]
    t_max: PositiveInt | None = None
    eta_min: NonNegativeNumber = 0.0


OPTIMIZER_MODELS = (GD, Momentum, Nesterov, Adam, RMSprop)
LOSS_MODELS = (MSE, L1, Huber, SmoothL1)
SCHEDULE_MODELS = (Constant, StepLR, ExponentialLR, CosineLR)
OPTIMIZERS = names_of(OPTIMIZER_MODELS)
LOSSES = names_of(LOSS_MODELS)
SCHEDULES = names_of(SCHEDULE_MODELS)
Optimizer = _named("optimizer", OPTIMIZER_MODELS)
Loss = _named("loss", LOSS_MODELS)
Schedule = _named("schedule", SCHEDULE_MODELS)


# ---------------------------------------------------------------- the config


def _device(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected one of {DEVICE_HELP}; got {type_name(value)}")
    base, _, index = value.partition(":")
    if base in ("auto", "cpu", "mps") and not index:
        return value
    if base == "cuda" and (not index or index.isdigit()):
        return value
    raise ValueError(f"unknown device {value!r}; choose one of: {DEVICE_HELP}")


def _one_of(what: str, choices: tuple[str, ...]) -> BeforeValidator:
    # checked before pydantic's Literal check, for our wording and a did-you-mean
    return BeforeValidator(lambda value: choose(what, value, choices))


def _sweep_section(value: Any) -> dict[str, Any]:
    """`sweep:` is read by `gdfit sweep` (grid values are checked there); `run` ignores it."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of KEY: values, got {type_name(value)}")
    return value


class FitConfig(_Frozen):
    """Everything one run needs; built once, never changed."""

    target: TensorSpec
    init: InitSpec = NamedInit(name="random")
    seed: Seed = 0
    loss: Loss = MSE()
    optimizer: Optimizer = GD()
    learning_rate: PositiveNumber = 1.0
    schedule: Schedule = Constant()
    threshold: NonNegativeNumber = 1.0e-5
    max_iters: NonNegativeInt = 10_000
    timeout_s: PositiveNumber | None = None
    patience: PositiveInt | None = None
    min_rel_improvement: UnitInterval = 1.0e-6  # an improvement of 100% or more is impossible
    divergence_factor: Annotated[float, BeforeValidator(greater_than_one)] = 1.0e6
    device: Annotated[str, BeforeValidator(_device)] = "auto"
    dtype: Annotated[DtypeName, _one_of("dtype", DTYPES)] = "float32"
    engine: Annotated[EngineName, _one_of("engine", ENGINES)] = "auto"
    sweep: Annotated[dict[str, Any], BeforeValidator(_sweep_section)] | None = None

    @field_validator("init", mode="after")
    @classmethod
    def _init_matches_target(cls, init: Any, info: ValidationInfo) -> Any:
        target = info.data.get("target")
        if _is_inline(init) and target is not None and _is_inline(target):
            ti, tt = shape_of(init), shape_of(target)
            if ti != tt:
                raise ValueError(f"shape {list(ti)} differs from the target's shape {list(tt)}")
        return init


KEYS = tuple(FitConfig.model_fields)
