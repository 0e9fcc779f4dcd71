"""The config's pydantic models: every key, its type, its default and its checks.

Each named option (optimizer, loss, schedule, init) is a small frozen model whose `name` is a
Literal; the tuples of valid names are read back from those Literals, so a name lives in one place.
"""

from __future__ import annotations

import keyword
import math
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    StrictBool,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_serializer,
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
    first_missing,
    greater_than_one,
    positive,
    inline_target,
    inline_tensor,
    shape_list,
    shape_of,
    unit_interval,
    where,
)
from gdfit.config.curves import CURVE_NAMES, CURVES, CurveName, is_builtin_curve, parameter_fields
from gdfit.config.yamlsource import type_name

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


class ColumnSource(_Frozen):
    """`{column: NAME}`: a column of the config's `data` file."""

    column: Annotated[str, BeforeValidator(lambda v: _column_name(v))]


def _column_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a column name, got {type_name(value)}")
    return value


def _target_tag(value: Any) -> str:
    """Which member of the target union `value` is (asked of input mappings and of built models)."""
    if isinstance(value, ColumnSource) or (isinstance(value, dict) and "column" in value):
        return "column"
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
    if isinstance(value, dict) and not {"file", "random", "column"} & set(value):
        raise ValueError(
            f"expected a matrix, {{file: PATH}}, {{random: {{shape: [..]}}}} or {{column: NAME}}, got keys {sorted(value)}"
        )
    return value


def _init_spec(value: Any) -> Any:
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and "name" in value:
        choose("init", value["name"], INIT_NAMES)
        return value
    return _target_spec(value)


InlineTensor = Annotated[Any, BeforeValidator(inline_tensor)]
_FILE, _RANDOM, _INLINE, _COLUMN = (
    Annotated[FileSource, Tag("file")],
    Annotated[RandomSource, Tag("random")],
    Annotated[InlineTensor, Tag("inline")],
    Annotated[ColumnSource, Tag("column")],
)
_INLINE_TARGET = Annotated[Annotated[Any, BeforeValidator(inline_target)], Tag("inline")]  # NaN: missing
# Tagged unions, so that an error inside a member names that member (for "allowed: ..." lists).
TensorSpec = Annotated[
    Union[_FILE, _RANDOM, _INLINE], Field(discriminator=Discriminator(_target_tag)), BeforeValidator(_target_spec)
]
TargetSpec = Annotated[
    Union[_FILE, _RANDOM, _INLINE_TARGET, _COLUMN], Field(discriminator=Discriminator(_target_tag)),
    BeforeValidator(_target_spec),
]
InitSpec = Annotated[
    Union[Annotated[NamedInit, Tag("name")], _FILE, _RANDOM, _INLINE],
    Field(discriminator=Discriminator(_init_tag)),
    BeforeValidator(_init_spec),
]


def _is_inline(spec: Any) -> bool:
    return not isinstance(spec, (FileSource, RandomSource, NamedInit, ColumnSource))


class DataSource(_Frozen):
    """`{file: PATH}`: named 1-D columns, from a CSV with a header row or an .npz of named arrays.
    With `group: COLUMN` each distinct value of that column is one independent fit (many fits at
    once); then the file may also be .parquet."""

    file: str
    group: Annotated[str, StringConstraints(min_length=1)] | None = None


# ---------------------------------------------------------------- models


def _param_spec(value: Any) -> Any:
    if isinstance(value, BaseModel):  # built already (a built-in curve's, made into an expression model)
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"value": value}
    if not isinstance(value, dict):
        raise ValueError(f"expected a start value or {{value: .., min: .., max: .., vary: ..}}, got {type_name(value)}")
    return value


class ParamSpec(_Frozen):
    """One parameter of an expression model: its start, optional bounds, and whether it is fitted;
    or, with `expr`, a derived parameter: a function of the others, not fitted. A built-in curve
    may leave `value` out (it is guessed from the data)."""

    value: Number | None = None
    min: Number | None = None
    max: Number | None = None
    vary: StrictBool = True  # YAML 1.2: `yes` is text, not true
    expr: Annotated[str, BeforeValidator(lambda v: _expr_text(v))] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        """A derived parameter as {expr}; a fitted one as before, without `expr: null`."""
        if self.expr is not None:
            return {"expr": self.expr}
        dumped = handler(self)
        dumped.pop("expr", None)
        return dumped

    @model_validator(mode="after")
    def _inside(self) -> ParamSpec:
        if self.expr is not None:
            extra = sorted(self.model_fields_set - {"expr"})
            if extra:
                raise ValueError(f"a derived parameter (expr) is not fitted: it takes no {', '.join(extra)}")
            return self
        low = -math.inf if self.min is None else self.min
        high = math.inf if self.max is None else self.max
        if not low < high:
            raise ValueError(f"min must be below max, got min={self.min:g}, max={self.max:g}")
        if self.value is not None and not low <= self.value <= high:
            raise ValueError(f"start value {self.value:g} is outside its bounds [{low:g}, {high:g}]")
        return self


def _param_name(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier() or value == "pi":
        raise ValueError(f"parameter names are identifiers like b1 or rate (not pi), got {value!r}")
    if keyword.iskeyword(value):  # True, None, lambda, ...: an expression could not name it
        raise ValueError(f"{value!r} is a reserved word of the expression language; name the parameter otherwise")
    return value


class ExpressionModel(_Frozen):
    """`{expr: TEXT, params: {NAME: start | {value, min, max, vary}}}`: a prediction from named
    parameters and the data's columns, in the grad-demo expression language."""

    expr: Annotated[str, BeforeValidator(lambda v: _expr_text(v))]
    params: dict[Annotated[str, BeforeValidator(_param_name)], Annotated[ParamSpec, BeforeValidator(_param_spec)]]

    @field_validator("params", mode="after")
    @classmethod
    def _some(cls, params: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not params:
            raise ValueError("an expression model needs at least one parameter")
        for name, spec in params.items():
            if spec.value is None and spec.expr is None:
                raise ValueError(f"parameter {name!r} needs a start value (value: ..), or expr: for a derived parameter")
        return params


def _curve_params(value: Any) -> Any:
    return {} if value is None else value


class BuiltinCurve(_Frozen):
    """`{name: gaussian, x: COLUMN, params: {NAME: start | {value, min, max, vary} | {expr}}}`: a
    built-in curve (config.curves) of the data column `x`; starts not given are guessed."""

    name: CurveName
    x: Annotated[str, BeforeValidator(lambda v: _curve_column(v))]
    params: Annotated[dict[Annotated[str, BeforeValidator(_param_name)], Annotated[ParamSpec, BeforeValidator(_param_spec)]],
                      BeforeValidator(_curve_params)] = {}

    @model_validator(mode="after")
    def _known(self) -> BuiltinCurve:
        names = CURVES[self.name][1]
        for key, spec in self.params.items():
            if key not in names and spec.expr is None:
                raise ValueError(f"model {self.name} has the parameters {', '.join(names)}; {key!r} is none of them "
                                 "(a new name needs expr: to be a derived parameter)")
        return self

    @model_validator(mode="after")
    def _default_bounds(self) -> BuiltinCurve:
        """The model's own bounds (DEFAULT_BOUNDS) written into its params where the config sets
        none, so that the resolved config, the checks and the report show the bounds the fit keeps."""
        params = dict(self.params)
        for name in CURVES[self.name][1]:
            given = params.get(name)
            fields = parameter_fields(self.name, name, None if given is None else given.model_dump(exclude_unset=True))
            if given is None and len(fields) > 0:
                params[name] = ParamSpec(**fields)
            elif given is not None and fields.keys() - given.model_fields_set:
                params[name] = ParamSpec(**fields)
        return self if params == self.params else self.model_copy(update={"params": params})


def _curve_column(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"expected the name of a data column usable in expressions (like x or dose), got {value!r}")
    return value


def _expr_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected the expression as text, got {type_name(value)}")
    return value


# ---------------------------------------------------------------- global fits


def _dataset_model(value: Any) -> Any:
    if isinstance(value, dict) and "params" in value:
        raise ValueError("a global fit's parameters are shared by name: give them once, in the top-level params")
    if not isinstance(value, dict):
        raise ValueError(f"expected {{expr: TEXT}}, got {type_name(value)}")
    return value


class DatasetModel(_Frozen):
    """A dataset's `model: {expr: TEXT}`: its prediction, from the shared parameters and its columns."""

    expr: Annotated[str, BeforeValidator(lambda v: _expr_text(v))]


class Dataset(_Frozen):
    """One dataset of a global fit: its own data file, target, expression and optional sigma."""

    data: DataSource
    target: TargetSpec
    model: Annotated[DatasetModel, BeforeValidator(_dataset_model)]
    sigma: ColumnSource | None = None


def _dataset_list(value: Any) -> Any:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of datasets ({{data: .., target: .., model: {{expr: ..}}}}), got {type_name(value)}")
    if not value:
        raise ValueError("the list is empty; a global fit needs at least one dataset")
    return value


Params = dict[Annotated[str, BeforeValidator(_param_name)], Annotated[ParamSpec, BeforeValidator(_param_spec)]]
_FROM_DATASETS = object()  # `target` of a global fit: each dataset has its own


def _confidence(value: Any) -> list[float]:
    """`confidence: [1, 2]` (or one number): sigma levels, sorted; below 1, a probability (as lmfit)."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("expected sigma levels like [1, 2], got an empty list")
    return sorted({positive(v) for v in values})


class IdentityModel(_Frozen):
    """x itself is fitted to the target (the tutorial's problem)."""

    name: Literal["identity"] = "identity"


class LowRankModel(_Frozen):
    """The prediction U @ V.T, with U [m, rank] and V [n, rank]; `l2` is lambda in
    sum (U V^T - T)^2 + lambda (|U|^2 + |V|^2), both divided by the observed entries (gdfit.fitting.matrix)."""

    name: Literal["lowrank"]
    rank: PositiveInt
    l2: NonNegativeNumber = 0.0


class LinearModel(_Frozen):
    """The prediction inputs @ W (+ b)."""

    name: Literal["linear"]
    inputs: TensorSpec
    bias: StrictBool = False


NAMED_MODELS = (IdentityModel, LowRankModel, LinearModel)
MODEL_NAMES = names_of(NAMED_MODELS) + tuple(n for n in CURVE_NAMES if n not in names_of(NAMED_MODELS))
CURVE_MODELS = (ExpressionModel, BuiltinCurve)  # models of named scalar parameters over data columns


def _model_tag(value: Any) -> str:
    if isinstance(value, ExpressionModel) or (isinstance(value, dict) and "expr" in value):
        return "expr"
    if is_builtin_curve(value):
        return "curve"
    return "named"


def _model_spec(value: Any) -> Any:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"expected {{expr: .., params: ..}} or a model name ({', '.join(MODEL_NAMES)}), got {type_name(value)}")
    if value.get("name") in CURVE_NAMES and "x" not in value and "inputs" not in value:
        raise ValueError(f"model {value['name']} needs `x:`, the data column it is a function of"
                         + (" (or `inputs:` for the matrix model A @ W)" if value["name"] == "linear" else ""))
    if "expr" not in value:
        if "name" not in value:
            raise ValueError(f"a model needs `expr:` and `params:`, or `name:` one of {', '.join(MODEL_NAMES)}")
        choose("model", value["name"], MODEL_NAMES)
    return value


ModelSpec = Annotated[
    Union[
        Annotated[ExpressionModel, Tag("expr")],
        Annotated[BuiltinCurve, Tag("curve")],
        Annotated[Union[NAMED_MODELS], Field(discriminator="name"), Tag("named")],
    ],
    Field(discriminator=Discriminator(_model_tag)),
    BeforeValidator(_model_spec),
]


def _holdout_spec(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"fraction": value}
    if not isinstance(value, dict):
        raise ValueError(f"expected a fraction like 0.2, or {{fraction: 0.2, seed: 0}}, got {type_name(value)}")
    return value


def _fraction(value: Any) -> float:
    number = finite(value)
    if not 0 < number < 1:
        raise ValueError(f"must be in (0, 1): the share of observed entries to hide, got {number:g}")
    return number


class HoldoutSpec(_Frozen):
    """`holdout: F` or `{fraction: F, seed: S}`: hide a seeded share F of the observed target
    entries from the fit and report the prediction's RMSE on them. The split has its own seed, so
    that runs of different `seed` (multi-start) or rank are judged on the same entries."""

    fraction: Annotated[float, BeforeValidator(_fraction)]
    seed: Seed = 0


MATRIX_MODELS = ("lowrank", "linear")  # models whose targets may have missing entries


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
    """torch's huber_loss with `delta`; with lm, scipy's least_squares(loss="huber", f_scale=delta),
    the same function doubled. `f_scale` may name delta for lm's robust losses (not both)."""

    name: Literal["huber"]
    delta: PositiveNumber = 1.0
    f_scale: PositiveNumber | None = None

    @model_validator(mode="after")
    def _one_scale(self) -> "Huber":
        if self.f_scale is not None and "delta" in self.model_fields_set and self.f_scale != self.delta:
            raise ValueError("give delta or f_scale (the same scale), not both")
        return self

    @property
    def scale(self) -> float:
        return self.f_scale if self.f_scale is not None else self.delta


class SmoothL1(_Frozen):
    name: Literal["smooth_l1"]
    beta: PositiveNumber = 1.0


class SoftL1(_Frozen):
    """scipy's soft_l1 for lm: rho(z) = 2 (sqrt(1 + z) - 1), z = (r / f_scale)^2."""

    name: Literal["soft_l1"]
    f_scale: PositiveNumber = 1.0


class Cauchy(_Frozen):
    """scipy's cauchy for lm: rho(z) = ln(1 + z)."""

    name: Literal["cauchy"]
    f_scale: PositiveNumber = 1.0


class Arctan(_Frozen):
    """scipy's arctan for lm: rho(z) = arctan(z)."""

    name: Literal["arctan"]
    f_scale: PositiveNumber = 1.0


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


class LBFGS(_Frozen):
    """L-BFGS with a strong-Wolfe line search, as torch.optim.LBFGS; one update is one iteration."""

    name: Literal["lbfgs"]
    history_size: PositiveInt = 100


class LM(_Frozen):
    """Levenberg-Marquardt on the residuals (least squares), trust region and scaling after MINPACK."""

    name: Literal["lm"]
    damping: PositiveNumber = 1.0e-3  # the Levenberg parameter the first step's search starts from (scaled curvature)


class ALS(_Frozen):
    """Alternating least squares for lowrank (as Spark MLlib's ALS): each update solves for U with V
    fixed, then for V with U fixed, each an exact least-squares solve; no learning rate."""

    name: Literal["als"]


OPTIMIZER_MODELS = (GD, Momentum, Nesterov, Adam, RMSprop, LBFGS, LM, ALS)
LOSS_MODELS = (MSE, L1, Huber, SmoothL1, SoftL1, Cauchy, Arctan)
ROBUST_LOSSES = ("soft_l1", "huber", "cauchy", "arctan")  # lm's, as scipy's least_squares
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

    target: TargetSpec
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
    data: DataSource | None = None
    model: ModelSpec = IdentityModel()
    sigma: ColumnSource | None = None
    absolute_sigma: StrictBool = False
    allow_underdetermined: StrictBool = False  # fit fewer data points than free parameters (gdfit.curves.uncertainty)
    ftol: NonNegativeNumber | None = None
    xtol: NonNegativeNumber | None = None
    gtol: NonNegativeNumber | None = None
    mask: TensorSpec | None = None
    holdout: Annotated[HoldoutSpec, BeforeValidator(_holdout_spec)] | None = None
    sweep: Annotated[dict[str, Any], BeforeValidator(_sweep_section)] | None = None
    datasets: Annotated[list[Dataset], BeforeValidator(_dataset_list)] | None = None
    params: Params | None = Field(default=None, validate_default=True)  # checked against datasets when absent
    confidence: Annotated[list[float], BeforeValidator(_confidence)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _fit_defaults(cls, data: Any) -> Any:
        """A fit of model parameters rarely reaches loss 0: unless set, `threshold` is off and it
        stops by least_squares' rules. A curve fit with lm or lbfgs takes TOLERANCE_DEFAULTS (lbfgs
        without gtol, which is absolute); its first-order methods take none (on ill-scaled curves one of their
        updates may lower the loss by 1e-12 relative long before the end). lowrank and linear take
        ftol and xtol (and linear gtol) at MATRIX_TOLERANCE with every optimizer."""
        if isinstance(data, dict) and (_fits_parameters(data.get("model")) or data.get("datasets") is not None):
            data = dict(data)
            _curve_defaults(data)
            model_name = _model_name(data.get("model"))
            if model_name in ("lowrank", "linear") and not is_builtin_curve(data.get("model")):
                # gtol is absolute: from lowrank's small start (near the saddle at 0) the gradient
                # is small because the start is, and gtol would stop the run before it began
                keys, tolerance = ("ftol", "xtol") if model_name == "lowrank" else TOLERANCES, MATRIX_TOLERANCE
                for key in keys:
                    data.setdefault(key, tolerance)
            else:
                for key, tolerance in TOLERANCE_DEFAULTS.get(_optimizer_name(data.get("optimizer")), {}).items():
                    data.setdefault(key, tolerance)
            data.setdefault("threshold", 0.0)
        return data

    @model_validator(mode="before")
    @classmethod
    def _global_target(cls, data: Any) -> Any:
        """A global fit has no top-level target: each dataset has its own."""
        if isinstance(data, dict) and data.get("datasets") is not None and "target" not in data:
            return {**data, "target": _FROM_DATASETS}
        return data

    @model_validator(mode="after")
    def _columns_need_data(self) -> FitConfig:
        for key in ("target", "sigma"):
            if isinstance(getattr(self, key), ColumnSource) and self.data is None:
                raise ValueError(f"{key}: {{column: ..}} needs `data: {{file: PATH}}` to name the columns")
        if isinstance(self.model, BuiltinCurve) and self.data is None:
            raise ValueError(f"model {self.model.name}: x: {self.model.x} names a column of `data: {{file: PATH}}`, "
                             "which is missing")
        if isinstance(self.model, CURVE_MODELS) and "init" in self.model_fields_set:
            raise ValueError("init does not apply to an expression model: its params give the start values")
        if self.sigma is not None and not isinstance(self.model, CURVE_MODELS):
            raise ValueError("sigma: weights are for expression models (model: {expr: .., params: ..})")
        self._check_matrix_keys()
        self._check_global_fit()
        self._check_lbfgs_curve_bounds()
        return self

    def _check_lbfgs_curve_bounds(self) -> None:
        """lbfgs keeps no bounds (descent.check_optimizer refuses an expression's min and max): nor a
        built-in curve's own (pseudovoigt's fraction in [0, 1]), which the config need not spell out."""
        if not (isinstance(self.model, BuiltinCurve) and getattr(self.optimizer, "name", None) == "lbfgs"):
            return
        for name, spec in self.model.params.items():
            if spec.vary and spec.expr is None and (spec.min is not None or spec.max is not None):
                low, high = ("-inf" if spec.min is None else f"{spec.min:g}"), ("inf" if spec.max is None else f"{spec.max:g}")
                own = parameter_fields(self.model.name, name, None) == {"min": spec.min, "max": spec.max}
                whose = f"model {self.model.name}'s own bounds" if own else "its min and max"
                raise ValueError(
                    f"model.params.{name}: lbfgs does not keep bounds, and {name} is kept in [{low}, {high}] ({whose}): "
                    f"use optimizer lm, which keeps them, or fix {name} (vary: false) or lift them (min: null, max: null)")

    @field_validator("target", mode="wrap")
    @classmethod
    def _target_of_datasets(cls, value: Any, handler: Any) -> Any:
        return None if value is _FROM_DATASETS else handler(value)

    @field_validator("datasets", mode="after")
    @classmethod
    def _datasets_alone(cls, datasets: list[Dataset] | None, info: ValidationInfo) -> list[Dataset] | None:
        """A global fit takes data, target, model and sigma from each dataset, none from the top level."""
        if datasets is not None:
            given = [key for key in GLOBAL_CLASHES
                     if info.data.get(key) is not None and info.data[key] != FitConfig.model_fields[key].default]
            if given:
                raise ValueError(f"top-level {' and '.join(given)} do{'es' if len(given) == 1 else ''} not go with datasets: "
                                 "each dataset has its own data, target, model and optional sigma; "
                                 "move them into the datasets")
        return datasets

    @field_validator("params", mode="after")
    @classmethod
    def _params_for_datasets(cls, params: dict[str, ParamSpec] | None, info: ValidationInfo) -> Any:
        if params is not None and "datasets" in info.data and info.data["datasets"] is None:  # not when it failed
            raise ValueError("top-level params are the shared parameters of a global fit (datasets); "
                             "a single fit gives them under model.params")
        if params is None and info.data.get("datasets") is not None:
            raise ValueError("datasets need top-level params: the shared parameters, {NAME: start} or "
                             "{NAME: {value, min, max, vary}}")
        if params is not None and not params:
            raise ValueError("a global fit needs at least one parameter")
        return params

    @field_validator("confidence", mode="after")
    @classmethod
    def _confidence_applies(cls, levels: list[float] | None, info: ValidationInfo) -> list[float] | None:
        """Profile intervals refit scalar parameters with lm on the sum of squares (engine/profile.py)."""
        if levels is None:
            return levels
        model, optimizer, loss = (info.data.get(key) for key in ("model", "optimizer", "loss"))
        if info.data.get("datasets") is None and isinstance(model, (IdentityModel, LowRankModel, LinearModel)):
            raise ValueError(f"intervals are for models with scalar parameters (model: {{expr: ..}} or datasets); "
                             f"model {model.name} has none")
        if optimizer is not None and optimizer.name != "lm":
            raise ValueError(f"profile intervals refit with lm, so the best fit must be lm's too: set optimizer: lm "
                             f"(not {optimizer.name})")
        if loss is not None and loss.name != "mse":
            raise ValueError(f"profile intervals compare chi-squares (loss: mse), not a {loss.name} loss")
        return levels

    def _check_global_fit(self) -> None:
        if self.datasets is None:
            return
        if "init" in self.model_fields_set:
            raise ValueError("init does not apply to a global fit: its params give the start values")
        if self.loss.name in ROBUST_LOSSES and isinstance(self.optimizer, LM):
            other = " (huber also works with a first-order optimizer, as adam)" if self.loss.name == "huber" else ""
            raise ValueError(f"loss: lm's robust loss {self.loss.name} is for fits of one dataset, not global fits "
                             f"(datasets:): use loss: mse{other}")

    def _check_matrix_keys(self) -> None:
        """Missing entries, masks and held-out entries are for the matrix models; they start from
        their own documented values, not from `init`."""
        matrix = getattr(self.model, "name", None) in MATRIX_MODELS
        for key in ("mask", "holdout"):
            if getattr(self, key) is not None and not matrix:
                raise ValueError(f"{key}: missing and held-out entries are for models {' and '.join(MATRIX_MODELS)}")
        if matrix and "init" in self.model_fields_set:
            raise ValueError(f"init does not apply to model {self.model.name}: its parameters start from `seed` "
                             "(see the documentation: docs/matrix-models.md)")
        missing = first_missing(self.target) if _is_inline(self.target) else None
        if missing is not None and isinstance(self.model, IdentityModel):
            place = f"{where(missing)}: " if missing else ""
            raise ValueError(f"target: {place}expected a finite number, got nan (NaN marks a missing entry only "
                             f"for models {' and '.join(MATRIX_MODELS)})")

    @field_validator("init", mode="after")
    @classmethod
    def _init_matches_target(cls, init: Any, info: ValidationInfo) -> Any:
        target = info.data.get("target")
        if _is_inline(init) and target is not None and _is_inline(target):
            ti, tt = shape_of(init), shape_of(target)
            if ti != tt:
                raise ValueError(f"shape {list(ti)} differs from the target's shape {list(tt)}")
        return init


def _model_name(model: Any) -> str | None:
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        return model.get("name")
    return getattr(model, "name", None)


def _curve_defaults(data: dict[str, Any]) -> None:
    """A curve fit (an expression or a built-in curve) fits with lm unless `optimizer` is set, and
    in float64 unless `dtype` is set or the optimizer set is another one (the first-order methods
    keep the seed's float32): lm's least squares needs float64's digits for its statistics. A
    global fit (datasets:) is a curve fit, by the same rules."""
    model = data.get("model")
    if not (isinstance(model, CURVE_MODELS) or (isinstance(model, dict) and "expr" in model)
            or is_builtin_curve(model) or data.get("datasets") is not None):
        return
    if "optimizer" not in data:
        data["optimizer"] = "lm"
        data.setdefault("dtype", "float64")
    elif _optimizer_name(data["optimizer"]) == "lm":
        data.setdefault("dtype", "float64")


def _fits_parameters(model: Any) -> bool:
    """Whether a raw `model:` entry fits parameters rather than x itself."""
    if isinstance(model, (ExpressionModel, BuiltinCurve, LowRankModel, LinearModel)):
        return True
    if isinstance(model, str):
        return model != "identity"
    return isinstance(model, dict) and model.get("name", "expr") != "identity"


GLOBAL_CLASHES = ("target", "data", "model", "sigma")  # keys a global fit takes from each dataset


def _optimizer_name(value: Any) -> Any:
    return value.get("name") if isinstance(value, dict) else (value or "gd")


FIT_TOLERANCE = 1.0e-10  # least_squares' 1e-8 leaves ENSO's weakest parameters at 3 digits
TOLERANCE_DEFAULTS = {
    "lm": {"ftol": FIT_TOLERANCE, "xtol": FIT_TOLERANCE, "gtol": FIT_TOLERANCE},
    "lbfgs": {"ftol": FIT_TOLERANCE, "xtol": FIT_TOLERANCE},  # gtol is absolute: off unless asked
}
MATRIX_TOLERANCE = 1.0e-8  # lowrank and linear, with every optimizer
TOLERANCES = ("ftol", "xtol", "gtol")
KEYS = tuple(FitConfig.model_fields)
