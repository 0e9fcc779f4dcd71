"""Built-in curve models: `model: {name: gaussian, x: COLUMN}` and the others, by name.

Each is an expression of the language over the data column `x` with fixed parameter names (lmfit's
names for lmfit's models). `params` may be left out or name only some parameters: the starts not
given are guessed from the data (gdfit.curves.guesses). The config checks them (config.model's
BuiltinCurve); the fit builds them as expression models (gdfit.curves.curvefit).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

CurveName = Literal["gaussian", "lorentzian", "pseudovoigt", "logistic4", "exponential", "linear", "quadratic",
                    "powerlaw"]
CURVE_NAMES: tuple[str, ...] = get_args(CurveName)

# each model's expression over the column (written X here) and its parameters, in order
CURVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "gaussian": ("gaussian(X, amplitude, center, sigma)", ("amplitude", "center", "sigma")),
    "lorentzian": ("lorentzian(X, amplitude, center, sigma)", ("amplitude", "center", "sigma")),
    "pseudovoigt": ("pseudovoigt(X, amplitude, center, sigma, fraction)", ("amplitude", "center", "sigma", "fraction")),
    "logistic4": ("logistic4(X, bottom, top, ec50, hill)", ("bottom", "top", "ec50", "hill")),
    "exponential": ("amplitude * exp(-X / decay)", ("amplitude", "decay")),
    "linear": ("slope * X + intercept", ("slope", "intercept")),
    "quadratic": ("a * X ** 2 + b * X + c", ("a", "b", "c")),
    "powerlaw": ("amplitude * X ** exponent", ("amplitude", "exponent")),
}
# bounds a model starts with unless its params say otherwise (lmfit's: a fraction is a share)
DEFAULT_BOUNDS: dict[tuple[str, str], dict[str, float]] = {("pseudovoigt", "fraction"): {"min": 0.0, "max": 1.0}}


def parameter_fields(curve: str, name: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """A built-in curve's parameter as the fit takes it: its DEFAULT_BOUNDS under the fields the
    config sets (`given`, only those set: `min: null` lifts a default bound)."""
    return {**DEFAULT_BOUNDS.get((curve, name), {}), **(given or {})}


def curve_expression(name: str, column: str) -> str:
    """The model's expression text over the data column `column`."""
    return CURVES[name][0].replace("X", column)


def curve_text(model: dict[str, Any]) -> str:
    """A curve model (as the resolved config dumps it) in words: an expression model's text, or a
    built-in curve's name and its expression over its column."""
    return model["expr"] if "expr" in model else f"{model['name']}: {curve_expression(model['name'], model['x'])}"


def is_builtin_curve(value: Any) -> bool:
    """Whether a raw or built `model:` entry is a built-in curve (`linear` with `inputs` is the
    matrix model of that name)."""
    if getattr(value, "x", None) is not None and getattr(value, "name", None) in CURVE_NAMES:
        return True
    if not isinstance(value, dict) or value.get("name") not in CURVE_NAMES:
        return False
    return not (value["name"] == "linear" and "inputs" in value)
