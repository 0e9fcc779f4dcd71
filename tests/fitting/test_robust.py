"""lm's robust losses held to scipy.optimize.least_squares(loss=NAME, f_scale=F) at tight tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from test_curvefit import run_fit, write_data

scipy_optimize = pytest.importorskip("scipy.optimize", reason="scipy is the test-only oracle (extra `test`)")

EXPR = "a * exp(-t / tau) + c"


def outlying_decay(seed: int = 4):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 10, 60)
    y = 5 * np.exp(-t / 2.5) + 0.5 + 0.05 * rng.standard_normal(t.size)
    y[[5, 17, 33, 48]] += [3.0, -2.0, 2.5, 4.0]  # outliers that pull a least-squares fit
    return t, y


def scipy_fit(t, y, loss, f_scale, start, sigma=None):
    w = 1 / sigma if sigma is not None else 1.0

    def residuals(p):
        return (p[0] * np.exp(-t / p[1]) + p[2] - y) * w

    return scipy_optimize.least_squares(residuals, start, loss=loss, f_scale=f_scale, xtol=1e-15, ftol=1e-15,
                                        gtol=1e-15, method="trf", max_nfev=10000).x


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
@pytest.mark.parametrize("f_scale", [0.1, 1.0])
def test_lm_fits_least_squares_robust_minimizer(tmp_path, loss, f_scale):
    t, y = outlying_decay()
    start = [4.0, 2.0, 0.0]
    data = write_data(tmp_path, {"t": list(t), "y": list(y)})
    _, result = run_fit(tmp_path, optimizer="lm", data={"file": data}, loss={"name": loss, "f_scale": f_scale},
                        model={"expr": EXPR, "params": dict(zip(["a", "tau", "c"], start))},
                        ftol=1e-15, xtol=1e-15, gtol=1e-15, max_iters=2000)
    expected = scipy_fit(t, y, loss, f_scale, start)
    plain = scipy_fit(t, y, "linear", 1.0, start)
    got = [result.params[n]["value"] for n in ("a", "tau", "c")]
    assert result.status == "converged"
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.abs(np.array(got) - plain).max() > 1e-3  # the outliers matter: a plain fit is elsewhere
    assert result.fit["loss"] == {"name": loss, "f_scale": f_scale}


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_a_robust_fits_stderr_is_curve_fits(tmp_path, loss):
    # curve_fit with a robust loss takes the covariance from least_squares' scaled Jacobian and
    # s^2 = 2 cost / (n - p)
    t, y = outlying_decay()
    data = write_data(tmp_path, {"t": list(t), "y": list(y)})
    _, result = run_fit(tmp_path, optimizer="lm", data={"file": data}, loss={"name": loss, "f_scale": 0.3},
                        model={"expr": EXPR, "params": {"a": 4, "tau": 2, "c": 0}},
                        ftol=1e-15, xtol=1e-15, gtol=1e-15, max_iters=2000)
    popt, pcov = scipy_optimize.curve_fit(lambda t, a, tau, c: a * np.exp(-t / tau) + c, t, y, p0=[4, 2, 0],
                                          loss=loss, f_scale=0.3, method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15,
                                          max_nfev=10000)
    np.testing.assert_allclose([result.params[n]["stderr"] for n in ("a", "tau", "c")], np.sqrt(np.diag(pcov)),
                               rtol=1e-6)
    np.testing.assert_allclose(result.covariance, pcov, rtol=1e-6)


def test_a_weighted_robust_fit_is_scipys_on_the_weighted_residuals(tmp_path):
    t, y = outlying_decay(7)
    sigma = 0.05 + 0.02 * t
    data = write_data(tmp_path, {"t": list(t), "y": list(y), "s": list(sigma)})
    _, result = run_fit(tmp_path, optimizer="lm", data={"file": data}, sigma={"column": "s"},
                        loss={"name": "cauchy", "f_scale": 2.0}, model={"expr": EXPR, "params": {"a": 4, "tau": 2, "c": 0}},
                        ftol=1e-15, xtol=1e-15, gtol=1e-15, max_iters=2000)
    expected = scipy_fit(t, y, "cauchy", 2.0, [4.0, 2.0, 0.0], sigma)
    np.testing.assert_allclose([result.params[n]["value"] for n in ("a", "tau", "c")], expected, rtol=1e-6)


def test_huber_keeps_delta_for_gd_and_refuses_two_scales(cli, write_config):
    from gdfit.config import build_config
    from gdfit.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        build_config({"loss": {"name": "huber", "delta": 2, "f_scale": 3}, "target": [1.0]}, source="t", base_dir=".")
    assert build_config({"loss": {"name": "huber", "f_scale": 3}, "target": [1.0]}, source="t",
                        base_dir=".").config.loss.scale == 3


@pytest.mark.parametrize("loss", ["soft_l1", "cauchy", "arctan"])
def test_the_robust_losses_need_lm(cli, write_config, loss):
    path = write_config(f"target: [1.0, 2.0]\nloss: {{name: {loss}, f_scale: 1}}\n")
    result = cli("run", path)
    assert result.exit_status == 2 and "use optimizer: lm" in result.stderr
