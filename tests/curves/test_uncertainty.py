"""Uncertainties only for fits that converged; fits with fewer points than parameters refused."""

from __future__ import annotations

import json

from test_curvefit import EXPR, X, Y, write_data


def config(tmp_path, **extra) -> str:
    data = write_data(tmp_path, {"x": X, "y": Y})
    lines = [f"data: {{file: {data}}}", "target: {column: y}", "dtype: float64",
             f"model: {{expr: '{EXPR}', params: {{b1: 500, b2: 1.0e-4}}}}"] + [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / "fit.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_fit_with_fewer_points_than_parameters_is_refused(cli, tmp_path):
    data = write_data(tmp_path, {"x": [1.0], "y": [2.0]}, "one.csv")
    path = tmp_path / "one.yaml"
    path.write_text(f"data: {{file: {data}}}\ntarget: {{column: y}}\noptimizer: lm\n"
                    "model: {expr: 'a + b * x + c * x * x', params: {a: 1, b: 1, c: 1}}\n")
    result = cli("run", str(path))
    assert result.exit_status == 2
    assert "1 data point cannot determine 3 free parameters" in result.stderr
    assert "allow_underdetermined: true" in result.stderr and "Traceback" not in result.stderr
    allowed = cli("run", str(path), "--set", "allow_underdetermined=true", "--json")
    assert allowed.exit_status in (0, 1) and allowed.lines[-1]["fit"]["dof"] == -2


def test_as_many_points_as_parameters_is_a_fit(cli, tmp_path):
    data = write_data(tmp_path, {"x": [1.0, 2.0], "y": [2.0, 3.0]}, "two.csv")
    path = tmp_path / "two.yaml"
    path.write_text(f"data: {{file: {data}}}\ntarget: {{column: y}}\noptimizer: lm\n"
                    "model: {expr: 'a + b * x', params: {a: 0, b: 0}}\n")
    assert cli("run", str(path), "--json").exit_status == 0


def test_a_fit_stopped_at_max_iters_reports_no_stderr_anywhere(cli, tmp_path):
    path = config(tmp_path, optimizer="lm", max_iters=1)
    out = tmp_path / "result.json"
    result = cli("run", path, "--json", "--output", str(out))
    end = result.lines[-1]
    assert end["status"] == "max_iters"
    assert [p["stderr"] for p in end["params"].values()] == [None, None] and end["covariance"] is None
    assert "status max_iters" in end["fit"]["stderr_reason"]
    document = json.loads(out.read_text())
    assert document["covariance"] is None and document["fit"]["stderr_reason"] == end["fit"]["stderr_reason"]
    human = cli("run", path)
    assert "no standard errors: the fit did not converge" in " ".join(human.stdout.split())


def test_a_converged_fit_keeps_its_stderr_and_gives_no_reason(cli, tmp_path):
    end = cli("run", config(tmp_path, optimizer="lm"), "--json").lines[-1]
    assert end["status"] == "converged" and "stderr_reason" not in end["fit"]
    assert all(p["stderr"] > 0 for p in end["params"].values()) and end["covariance"] is not None


def test_one_point_short_is_refused_too(cli, tmp_path):
    data = write_data(tmp_path, {"x": [1.0, 2.0], "y": [2.0, 3.0]}, "two.csv")
    path = tmp_path / "short.yaml"
    path.write_text(f"data: {{file: {data}}}\ntarget: {{column: y}}\noptimizer: lm\n"
                    "model: {expr: 'a + b * x + c * x * x', params: {a: 1, b: 1, c: 1}}\n")
    result = cli("run", str(path))
    assert result.exit_status == 2 and "2 data points cannot determine 3 free parameters" in result.stderr
