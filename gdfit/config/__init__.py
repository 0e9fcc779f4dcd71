"""The one typed, frozen config: defaults < file < --set < flags, validated with precise messages.

- `model`: the pydantic models, one per key and per named option, and the valid names they define;
- `values`: the checks those models are built from (numbers, names, inline tensors);
- `loading`: reading the file, applying `--set` and flags, validating once;
- `messages`: turning pydantic's errors into one located message.

Importing this package never imports torch (`gdfit --help` and `gdfit config` stay fast).
"""

from gdfit.config.loading import (
    RawConfig,
    Resolved,
    apply_override,
    build_config,
    load_config,
    merge_config,
    merge_document,
    parse_assignment,
    read_config_text,
)
from gdfit.config.model import (
    DEVICE_HELP,
    CURVE_MODELS,
    DTYPES,
    ENGINES,
    GD,
    INIT_NAMES,
    KEYS,
    L1,
    LOSSES,
    MSE,
    OPTIMIZERS,
    SCHEDULES,
    FIT_TOLERANCE,
    LBFGS,
    LM,
    ALS,
    MODEL_NAMES,
    Adam,
    BuiltinCurve,
    ColumnSource,
    Constant,
    DataSource,
    ExpressionModel,
    IdentityModel,
    LinearModel,
    LowRankModel,
    ModelSpec,
    ParamSpec,
    TargetSpec,
    CosineLR,
    DtypeName,
    ExponentialLR,
    FileSource,
    FitConfig,
    HoldoutSpec,
    MATRIX_MODELS,
    Huber,
    InitName,
    InlineTensor,
    Loss,
    Momentum,
    NamedInit,
    Nesterov,
    Optimizer,
    RandomSource,
    RandomSpec,
    RMSprop,
    Schedule,
    SmoothL1,
    SoftL1,
    Cauchy,
    Arctan,
    ROBUST_LOSSES,
    StepLR,
    TensorSpec,
)
from gdfit.config.values import (
    MAX_INLINE_ELEMENTS,
    MAX_RANK,
    Integer,
    NonNegativeInt,
    NonNegativeNumber,
    Number,
    PositiveNumber,
    UnitInterval,
    inline_tensor,
    shape_of,
)

_inline_tensor = inline_tensor  # the name gdfit.expr.graddemo imports

__all__ = [
    "DEVICE_HELP", "DTYPES", "ENGINES", "INIT_NAMES", "KEYS", "LOSSES", "MAX_INLINE_ELEMENTS", "MAX_RANK",
    "OPTIMIZERS", "SCHEDULES",
    "FitConfig", "GD", "Momentum", "Nesterov", "Adam", "RMSprop", "MSE", "L1", "Huber", "SmoothL1", "SoftL1", "Cauchy", "Arctan", "ROBUST_LOSSES",
    "FIT_TOLERANCE", "LBFGS", "LM", "ALS", "MODEL_NAMES", "CURVE_MODELS", "BuiltinCurve", "ColumnSource", "DataSource", "ExpressionModel",
    "HoldoutSpec", "IdentityModel", "LinearModel", "MATRIX_MODELS", "LowRankModel", "ModelSpec", "ParamSpec", "TargetSpec",
    "Constant", "StepLR", "ExponentialLR", "CosineLR", "FileSource", "RandomSource", "RandomSpec", "NamedInit",
    "DtypeName", "InitName", "InlineTensor", "Loss", "Optimizer", "Schedule", "TensorSpec",
    "Integer", "NonNegativeInt", "NonNegativeNumber", "Number", "PositiveNumber", "UnitInterval",
    "inline_tensor", "shape_of",
    "RawConfig", "Resolved", "apply_override", "build_config", "load_config", "merge_config", "merge_document",
    "parse_assignment", "read_config_text",
]
