"""Matrix models against independent oracles: the SVD (Eckart-Young, and soft-thresholding for l2),
torch.linalg.lstsq, torch autograd and the tutorial's loop written out; masks, held-out entries,
--save round trips, sweeps equal to single runs, and the errors for bad ranks and shapes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gdfit.sweeps import backends
from gdfit.sweeps.grid import expand
from gdfit.engine.advisor import advise
from gdfit.config import build_config
from gdfit.engine.descent import prepare
from gdfit.errors import GdfitError
from tests.helpers import assert_is_the_product, fit, resolved


def noisy_low_rank(m: int, n: int, rank: int, noise: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(m, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, n, generator=g, dtype=torch.float64)
    return signal + noise * torch.randn(m, n, generator=g, dtype=torch.float64)


@pytest.fixture
def matrix_file(tmp_path):
    def write(array, name: str = "target.npy") -> str:
        path = tmp_path / name
        np.save(path, np.asarray(array))
        return str(path)

    return write


def advised(**data) -> float:
    problem = prepare(resolved(**data))
    return advise(problem.loss, problem.x0, problem.target, problem.model)["suggested_lr"]


# ---------------------------------------------------------------- lowrank


def test_lowrank_reaches_the_truncated_svd_loss_eckart_young(matrix_file):
    target = noisy_low_rank(300, 200, 5, 0.1)
    s = torch.linalg.svdvals(target)
    best = float(s[5:].square().sum()) / target.numel()  # the best rank-5 fit's mse
    data = dict(target={"file": matrix_file(target)}, model={"name": "lowrank", "rank": 5}, dtype="float64",
                max_iters=5000)
    _, result, _ = fit(every=0, learning_rate=advised(**data), **data)
    assert result.status == "converged"
    assert abs(result.loss - best) <= 1e-6 * best
    fitted = result.matrix["singular_values"]
    assert fitted["method"] == "exact"
    assert fitted["target"] == pytest.approx(s[:5].tolist(), rel=1e-12)
    assert fitted["fitted"] == pytest.approx(s[:5].tolist(), rel=1e-6)


def test_lowrank_l2_shrinks_each_singular_value_by_lambda(matrix_file):
    target = noisy_low_rank(40, 30, 3, 0.05, seed=1)
    lam = 2.0
    U, s, Vh = torch.linalg.svd(target, full_matrices=False)
    shrunk = (s[:3] - lam).clamp_min(0)
    best_fit = (U[:, :3] * shrunk) @ Vh[:3]
    # sum (X - T)^2 + lambda (|U|^2 + |V|^2) is lambda * 2 |X|_* at balanced factors
    best = (float((best_fit - target).square().sum()) + lam * 2 * float(shrunk.sum())) / target.numel()
    data = dict(target={"file": matrix_file(target)}, model={"name": "lowrank", "rank": 3, "l2": lam},
                dtype="float64", max_iters=20000)
    _, result, _ = fit(every=0, learning_rate=advised(**data), **data)
    assert result.status == "converged"
    assert abs(result.loss - best) <= 1e-6 * best
    assert result.matrix["singular_values"]["fitted"] == pytest.approx(shrunk.tolist(), rel=1e-5)


# The engine keeps a run dimension: its products are batched matmuls ([1, m, r] @ [1, r, n]), the
# tutorial's are 2-D. BLAS libraries may sum those in different orders (on an Intel Xeon they do,
# by one float32 ulp at an update), so the claim is the tutorial's loop to float32 rounding: each
# loss within a relative 1e-5 (a few dozen ulps after 25 updates), which a learning rate 1e-3 off,
# or a wrong gradient term, exceeds by far (see the test below).
LOWRANK_RTOL = 1e-5


def _tutorial_lowrank(start, target, lr, updates, product=lambda U, V: U @ V.T):
    U, V = start["U"].clone().requires_grad_(True), start["V"].clone().requires_grad_(True)
    losses = []
    for _ in range(updates):
        loss = F.mse_loss(product(U, V), target)
        loss.backward()
        U = U - lr * U.grad; U.detach_(); U.requires_grad_(True)  # noqa: E702
        V = V - lr * V.grad; V.detach_(); V.requires_grad_(True)  # noqa: E702
        losses.append(float(F.mse_loss(U.detach() @ V.detach().T, target)))
    return losses, U.detach()


def _lowrank_run(lr=3.0, updates=25):
    target = noisy_low_rank(6, 5, 2, 0.1).float()
    _, result, descent = fit(target=target.tolist(), model={"name": "lowrank", "rank": 2}, learning_rate=lr,
                             max_iters=updates, ftol=None, xtol=None, every=0)
    return target, result, descent, descent.problem.model.parameters(descent.problem.x0)


def test_gd_on_lowrank_is_the_tutorial_loop_on_u_and_v():
    target, result, descent, start = _lowrank_run()
    losses, U = _tutorial_lowrank(start, target, 3.0, 25)
    torch.testing.assert_close(torch.tensor(result.history[1:]), torch.tensor(losses), rtol=LOWRANK_RTOL, atol=0)
    torch.testing.assert_close(descent.final_params["U"], U, rtol=LOWRANK_RTOL, atol=1e-7)
    # the same loop with its products summed in another order (another BLAS would) stays within it
    reordered, _ = _tutorial_lowrank(start, target, 3.0, 25, product=lambda U, V: (V.double() @ U.double().T).T.float())
    assert reordered != losses  # the orders do differ here
    torch.testing.assert_close(torch.tensor(result.history[1:]), torch.tensor(reordered), rtol=LOWRANK_RTOL, atol=0)


@pytest.mark.parametrize("lr", [3.0 * (1 + 1e-3), 3.0 * (1 - 1e-3)])
def test_the_lowrank_tolerance_tells_a_different_loop(lr):
    target, result, _, start = _lowrank_run()
    losses, _ = _tutorial_lowrank(start, target, lr, 25)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(torch.tensor(result.history[1:]), torch.tensor(losses), rtol=LOWRANK_RTOL, atol=0)


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "nesterov", "adam", "rmsprop", "lbfgs", "lm"])
def test_lowrank_works_with_every_optimizer(optimizer):
    data = dict(target=noisy_low_rank(8, 6, 2, 0.01).tolist(), model={"name": "lowrank", "rank": 2}, dtype="float64")
    stable = advised(**data)
    lr = {"gd": stable, "momentum": 0.3 * stable, "nesterov": 0.3 * stable, "adam": 0.05, "rmsprop": 0.01}
    _, result, _ = fit(optimizer=optimizer, learning_rate=lr.get(optimizer, 1.0), max_iters=300, every=0, **data)
    assert result.status in ("converged", "max_iters")
    assert result.loss < 0.05 * result.history[0]


def test_fused_and_autograd_engines_agree_on_lowrank():
    target = noisy_low_rank(7, 5, 2, 0.1).tolist()
    common = dict(target=target, model={"name": "lowrank", "rank": 2}, learning_rate=2.0, max_iters=40, every=0)
    _, fused, _ = fit(engine="fused", **common)
    _, literal, _ = fit(engine="autograd", **common)
    assert fused.history == literal.history


def test_lowrank_start_is_small_balanced_and_seeded():
    target = noisy_low_rank(50, 40, 4, 0.0)
    problems = [prepare(resolved(target=target.tolist(), model={"name": "lowrank", "rank": 4}, seed=seed,
                                 dtype="float64")) for seed in (0, 0, 1)]
    params = [p.model.parameters(p.x0) for p in problems]
    assert torch.equal(problems[0].x0, problems[1].x0) and not torch.equal(problems[0].x0, problems[2].x0)
    U, V = params[0]["U"], params[0]["V"]
    rms = float(target.square().mean().sqrt())
    assert float((U @ V.T).square().mean().sqrt()) == pytest.approx(0.01 * rms, rel=0.3)  # 1% of the target's RMS
    assert float(U.std()) == pytest.approx(float(V.std()), rel=0.2)  # balanced


def test_bad_ranks_are_errors(cli, write_config):
    zero = cli("run", write_config("target: [[1, 2], [3, 4], [5, 6]]\nmodel: {name: lowrank, rank: 0}\n"))
    assert zero.exit_status == 2 and "model.rank: must be an integer > 0, got 0" in zero.stderr
    large = cli("run", write_config("target: [[1, 2], [3, 4], [5, 6]]\nmodel: {name: lowrank, rank: 3}\n"))
    assert large.exit_status == 2
    assert "model.rank: rank 3 is larger than min(m, n) = 2 for the target of shape [3, 2]" in large.stderr
    vector = cli("run", write_config("target: [1, 2, 3]\nmodel: {name: lowrank, rank: 1}\n"))
    assert vector.exit_status == 2 and "lowrank needs a matrix target (2 dimensions), got shape [3]" in vector.stderr


# ---------------------------------------------------------------- linear


def linear_data(matrix_file, k: int | None = 3):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(200, 5, generator=g, dtype=torch.float64)
    shape = (5, k) if k else (5,)
    B = A @ torch.randn(*shape, generator=g, dtype=torch.float64) + 0.7
    B = B + 0.1 * torch.randn(B.shape, generator=g, dtype=torch.float64)
    return A, B, {"file": matrix_file(A, "A.npy")}, {"file": matrix_file(B, "B.npy")}


@pytest.mark.parametrize("optimizer", ["gd", "lm"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_lstsq(matrix_file, optimizer, bias):
    A, B, inputs, target = linear_data(matrix_file)
    design = torch.cat([A, torch.ones(len(A), 1, dtype=A.dtype)], 1) if bias else A
    solution = torch.linalg.lstsq(design, B).solution
    # gd: its own tolerances would stop it near 1e-8 in the loss, not in W; lm with the defaults
    tolerances = dict(ftol=None, xtol=None, gtol=1e-13) if optimizer == "gd" else {}
    data = dict(target=target, model={"name": "linear", "inputs": inputs, "bias": bias}, dtype="float64",
                optimizer=optimizer, max_iters=5000, **tolerances)
    lr = advised(**data) if optimizer == "gd" else 1.0
    _, result, descent = fit(every=0, learning_rate=lr, **data)
    assert result.status == "converged"
    W = descent.final_params["W"]
    assert float((W - solution[:5]).abs().max()) <= 1e-8
    if bias:
        assert float((descent.final_params["b"][0] - solution[5]).abs().max()) <= 1e-8


def test_linear_advice_is_exact_for_mse(matrix_file):
    A, B, inputs, target = linear_data(matrix_file, k=2)
    problem = prepare(resolved(target=target, model={"name": "linear", "inputs": inputs, "bias": True},
                               dtype="float64"))
    advice = advise(problem.loss, problem.x0, problem.target, problem.model)
    loss = lambda flat: F.mse_loss(problem.model.predict(problem.model.parameters(flat.unsqueeze(0)))[0], B)  # noqa: E731
    hessian = torch.autograd.functional.hessian(loss, problem.x0)
    largest = float(torch.linalg.eigvalsh(hessian).max())
    assert advice["exact"] is True
    assert advice["curvature"] == pytest.approx(largest, rel=1e-12)
    assert advice["max_stable_lr"] == pytest.approx(2 / largest, rel=1e-12)


def test_linear_on_a_vector_target_saves_a_vector_of_weights(matrix_file, tmp_path, cli, write_config):
    A, B, inputs, target = linear_data(matrix_file, k=None)
    config = write_config(f"target: {{file: {target['file']}}}\nmodel: {{name: linear, inputs: {{file: {inputs['file']}}}, "
                          "bias: true}\noptimizer: lm\ndtype: float64\n")
    result = cli("run", config, "--json", "--every", "0", "--save", str(tmp_path / "w.npz"))
    assert result.exit_status == 0, result.stderr
    saved = np.load(tmp_path / "w.npz")
    assert saved["W"].shape == (5,) and saved["b"].shape == () and saved["prediction"].shape == (200,)
    assert_is_the_product(saved["prediction"], A.numpy(), saved["W"], saved["b"])


def test_inputs_and_target_of_different_rows_name_both_shapes(cli, write_config):
    result = cli("run", write_config("target: [[1, 2], [3, 4], [5, 6]]\n"
                                     "model: {name: linear, inputs: [[1, 0], [0, 1]]}\n"))
    assert result.exit_status == 2
    assert "model.inputs: inputs have shape [2, 2] but the target has shape [3, 2]" in result.stderr


# ---------------------------------------------------------------- missing entries and held-out ones


MISSING = [[1.0, math.nan, 3.0, 4.0], [2.0, 4.0, math.nan, 8.0], [3.0, 6.0, 9.0, 12.5], [math.nan, 8.0, 12.0, 16.0]]


def test_the_loss_is_over_the_observed_entries_only():
    target = torch.tensor(MISSING, dtype=torch.float64)
    observed = ~torch.isnan(target)
    steps, result, descent = fit(target=MISSING, model={"name": "lowrank", "rank": 1}, dtype="float64",
                                 learning_rate=0.2, max_iters=30, ftol=None, xtol=None)
    U, V = descent.final_params["U"], descent.final_params["V"]
    assert result.loss == pytest.approx(float(F.mse_loss((U @ V.T)[observed], target[observed])), rel=1e-14)
    assert result.matrix == {**result.matrix, "entries": 16, "observed": 13, "missing": 3, "held_out": 0, "fitted": 13}
    # the gradient too: the closed form against autograd on the observed entries alone
    problem = descent.problem
    params = {n: p.unsqueeze(0).clone().requires_grad_(True) for n, p in descent.final_params.items()}
    F.mse_loss(problem.model.predict(params)[0][observed], target[observed]).backward()
    grad = problem.loss.grad(problem.model.predict(params).detach(), problem.target)
    closed = problem.model.parameter_grads({n: p.detach() for n, p in params.items()}, grad)
    for name in ("U", "V"):
        torch.testing.assert_close(closed[name], params[name].grad, rtol=1e-13, atol=0)


def test_nan_entries_and_a_mask_mean_the_same(tmp_path):
    known = [[v if not math.isnan(v) else 0.0 for v in row] for row in MISSING]
    mask = [[0.0 if math.isnan(v) else 1.0 for v in row] for row in MISSING]
    csv = tmp_path / "ratings.csv"
    csv.write_text("1,,3,4\n2,4,nan,8\n3,6,9,12.5\n,8,12,16\n")  # empty cells and nan: missing
    common = dict(model={"name": "lowrank", "rank": 1}, learning_rate=0.2, max_iters=50, every=0)
    runs = [fit(target=MISSING, **common)[1], fit(target=known, mask=mask, **common)[1],
            fit(target={"file": str(csv)}, **common)[1]]
    assert runs[0].history == runs[1].history == runs[2].history
    assert [r.matrix["observed"] for r in runs] == [13, 13, 13]


def test_bad_masks_and_missing_targets_are_errors(cli, write_config):
    shape = cli("run", write_config("target: [[1, 2], [3, 4]]\nmask: [[1, 0, 1]]\nmodel: {name: lowrank, rank: 1}\n"))
    assert shape.exit_status == 2 and "the mask has shape [1, 3] but the target has shape [2, 2]" in shape.stderr
    values = cli("run", write_config("target: [[1, 2], [3, 4]]\nmask: [[1, 0.5], [1, 1]]\nmodel: {name: lowrank, rank: 1}\n"))
    assert values.exit_status == 2 and "mask: the mask must hold only 0 (missing) and 1 (observed)" in values.stderr
    empty = cli("run", write_config("target: [[.nan, .nan], [.nan, .nan]]\nmodel: {name: lowrank, rank: 1}\n"))
    assert empty.exit_status == 2 and "every target entry is missing" in empty.stderr
    identity = cli("run", write_config("target: [[1, .nan], [3, 4]]\n"))
    assert identity.exit_status == 2 and "target: row 1, column 2: expected a finite number, got nan" in identity.stderr
    mask_for_x = cli("run", write_config("target: [[1, 2], [3, 4]]\nmask: [[1, 0], [1, 1]]\n"))
    assert mask_for_x.exit_status == 2 and "missing and held-out entries are for models lowrank and linear" in mask_for_x.stderr


def completion_problem(matrix_file, seed: int = 0):
    """Rank 3, 200 x 150, 40% observed, noise 0.01 (the issue's completion figure)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 150, generator=g, dtype=torch.float64)
    noisy = truth + 0.01 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    hidden = torch.rand(truth.shape, generator=g, dtype=torch.float64) >= 0.4
    return noisy.masked_fill(hidden, math.nan), matrix_file(noisy.masked_fill(hidden, math.nan))


def test_completion_held_out_rmse_is_within_three_sigma(matrix_file):
    _, path = completion_problem(matrix_file)
    data = dict(target={"file": path}, model={"name": "lowrank", "rank": 3}, dtype="float64", holdout=0.2,
                max_iters=3000)
    _, result, _ = fit(every=0, learning_rate=advised(**data), **data)
    assert result.matrix["observed"] == pytest.approx(0.4 * 200 * 150, rel=0.03)
    assert result.matrix["held_out"] == round(0.2 * result.matrix["observed"])
    assert result.matrix["holdout_rmse"] <= 3 * 0.01


def test_holdout_is_reproducible_and_its_rmse_adds_up(matrix_file, tmp_path, cli, write_config):
    target, path = completion_problem(matrix_file)
    lr = advised(target={"file": path}, model={"name": "lowrank", "rank": 3}, dtype="float64")
    config = write_config(f"target: {{file: {path}}}\nmodel: {{name: lowrank, rank: 3}}\nlearning_rate: {lr}\n"
                          "max_iters: 60\ndtype: float64\nftol: null\nxtol: null\n")
    first = cli("run", config, "--json", "--every", "20", "--holdout", "0.25", "--save", str(tmp_path / "a.npz"))
    again = cli("run", config, "--json", "--every", "20", "--holdout", "0.25", "--seed", "3")
    other = cli("run", config, "--json", "--every", "20", "--set", "holdout={fraction: 0.25, seed: 1}")
    end, end_again, end_other = first.lines[-1], again.lines[-1], other.lines[-1]
    assert [e.get("iter", e.get("iters")) for e in first.lines if "holdout_rmse" in e] == [20, 40, 60, 60]
    assert first.lines[0]["matrix"]["held_out"] == end["matrix"]["held_out"] == round(0.25 * end["matrix"]["observed"])
    assert end_again["holdout_rmse"] != end["holdout_rmse"]  # another start...
    # ...but the same held-out entries: the loss over fitted ones and the RMSE over held-out ones
    # add up to the squared error over all observed entries, for each run's own prediction
    saved = np.load(tmp_path / "a.npz")
    assert_is_the_product(saved["prediction"], saved["U"], saved["V"].T)
    observed = ~np.isnan(target.numpy())
    total = float(np.square(saved["prediction"] - target.numpy())[observed].sum())
    m = end["matrix"]
    assert total == pytest.approx(m["fitted"] * end["loss"] + m["held_out"] * end["holdout_rmse"] ** 2, rel=1e-10)
    assert end_other["holdout_rmse"] != end["holdout_rmse"]  # another split, same start


def test_holdout_that_leaves_nothing_is_an_error(cli, write_config):
    result = cli("run", write_config("target: [[1, 2], [3, .nan]]\nmodel: {name: lowrank, rank: 1}\n"), "--holdout", "0.1")
    assert result.exit_status == 2 and "holdout: holding out 0.1 of 3 observed entries leaves none held out" in result.stderr


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_save_round_trips_lowrank(tmp_path, cli, write_config, suffix):
    target = noisy_low_rank(6, 4, 2, 0.0).tolist()
    config = write_config(f"target: {target}\nmodel: {{name: lowrank, rank: 2}}\nlearning_rate: 3\nmax_iters: 50\n")
    link = tmp_path / f"link{suffix}"
    link.symlink_to(tmp_path / f"real{suffix}")
    result = cli("run", config, "--json", "--every", "0", "--save", str(link))
    assert result.exit_status in (0, 1), result.stderr
    assert link.is_symlink()  # written through the link
    if suffix == ".npz":
        saved = {k: torch.from_numpy(v) for k, v in np.load(tmp_path / f"real{suffix}").items()}
    else:
        saved = torch.load(tmp_path / f"real{suffix}", weights_only=True)
    assert set(saved) == {"U", "V", "prediction"}
    assert saved["U"].shape == (6, 2) and saved["V"].shape == (4, 2) and saved["prediction"].dtype == torch.float32
    assert torch.equal(saved["prediction"], saved["U"].unsqueeze(0) @ saved["V"].mT.unsqueeze(0)[0]) or \
        torch.allclose(saved["prediction"], saved["U"] @ saved["V"].T, rtol=1e-6)
    assert saved["prediction"].tolist() == result.lines[-1]["x"]


def test_save_works_for_identity_and_curve_fits(tmp_path, cli, write_config):
    identity = cli("run", write_config("target: [[1, 2]]\n"), "--json", "--save", str(tmp_path / "x.npz"))
    assert identity.exit_status == 0
    assert np.load(tmp_path / "x.npz")["x"].tolist() == identity.lines[-1]["x"]
    data = tmp_path / "data.csv"
    data.write_text("x,y\n0,1\n1,3\n2,5\n3,7\n")
    curve = cli("run", write_config(f"data: {{file: {data}}}\ntarget: {{column: y}}\n"
                                    "model: {expr: 'a * x + b', params: {a: 1, b: {value: 1, vary: false}}}\n"
                                    "optimizer: lm\ndtype: float64\n"), "--json", "--save", str(tmp_path / "c.pt"))
    assert curve.exit_status == 0, curve.stderr
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert float(saved["a"]) == pytest.approx(2.0) and float(saved["b"]) == 1.0
    assert saved["prediction"].tolist() == pytest.approx([1, 3, 5, 7])


def test_save_refuses_an_unknown_format_before_running(tmp_path, cli, write_config):
    result = cli("run", write_config("target: [[1, 2]]\n"), "--save", str(tmp_path / "out.csv"))
    assert result.exit_status == 2 and "--save: cannot tell the format from '.csv'; use .npz or .pt" in result.stderr


def test_result_panel_shows_singular_values_against_the_targets(cli, write_config):
    target = noisy_low_rank(8, 6, 2, 0.0).tolist()
    result = cli("run", write_config(f"target: {target}\nmodel: {{name: lowrank, rank: 2}}\nlearning_rate: 5\n"
                                     "dtype: float64\nmax_iters: 2000\n"), "--every", "0")
    assert "σ fitted" in result.stdout and "σ target (exact)" in result.stdout
    assert "entries" in result.stdout and "48 of 48 observed" in result.stdout


def test_plot_draws_the_held_out_rmse(tmp_path, cli, write_config):
    pytest.importorskip("matplotlib")
    config = write_config("target: [[1, 2, 3], [2, 4, 6], [3, 6, .nan], [4, 8, 12]]\nmodel: {name: lowrank, rank: 1}\n"
                          "learning_rate: 0.1\nmax_iters: 40\n")
    result = cli("run", config, "--every", "5", "--holdout", "0.2", "--plot", str(tmp_path / "p.png"))
    assert result.exit_status in (0, 1), result.stderr
    assert (tmp_path / "p.png").stat().st_size > 0


# ---------------------------------------------------------------- sweeps


def test_sweeps_of_matrix_models_equal_single_runs():
    base = {"target": {"random": {"shape": [10, 9], "seed": 1}}, "model": {"name": "lowrank", "rank": 3},
            "learning_rate": 10, "max_iters": 120, "holdout": 0.2, "device": "cpu"}
    grid = {"seed": [0, 1], "learning_rate": [5, 10], "model.rank": [2, 3]}
    runs = list(expand(base, grid, "test", Path(".")))
    *_, results = backends.execute(runs, 200, lambda: False)
    plan = next(backends.execute(runs, 200, lambda: False))
    assert plan.batches == 2 and "model.rank" in plan.why  # ranks cannot share a tensor
    for run, record in zip(runs, results):
        single = {**base, "seed": run.params["seed"], "learning_rate": run.params["learning_rate"],
                  "model": {"name": "lowrank", "rank": run.params["model.rank"]}}
        _, alone, _ = fit(every=0, **single)
        assert (record.status, record.iters, repr(record.loss)) == (alone.status, alone.iters, repr(alone.loss))
        assert record.holdout_rmse == alone.matrix["holdout_rmse"]
        assert record.x.tolist() == alone.x.tolist()


def test_memory_guard_counts_parameters_and_gradients(monkeypatch):
    import gdfit.files.tensors as tensors

    monkeypatch.setattr(tensors, "available_bytes", lambda device: 40 * 2**20)
    small = resolved(target={"random": {"shape": [1000, 1000]}}, model={"name": "lowrank", "rank": 2})
    prepare(small)  # a 4 MB target, five target-sized tensors: fits in 32 MB
    wide = resolved(target={"random": {"shape": [1000, 1000]}}, model={"name": "lowrank", "rank": 1000},
                    optimizer="adam")
    with pytest.raises(GdfitError, match=r"model lowrank on a target of shape \[1000, 1000\] needs about"):
        prepare(wide)  # its parameters (twice the target), their gradients and Adam's state do not


def test_config_refuses_init_for_matrix_models():
    with pytest.raises(GdfitError, match="init does not apply to model lowrank"):
        build_config({"target": [[1, 2]], "model": {"name": "lowrank", "rank": 1}, "init": "zeros"},
                     source="t", base_dir=Path("."))


def test_a_resumed_lowrank_run_ends_where_the_whole_one_does(tmp_path, cli, write_config):
    config = write_config("target: [[1, 2, 3], [2, 4, 6.5], [3, .nan, 9], [4, 8, 12]]\nmodel: {name: lowrank, rank: 1}\n"
                          "learning_rate: 0.05\nholdout: 0.2\nftol: null\nxtol: null\n")
    ckpt = str(tmp_path / "run.ckpt")
    assert cli("run", config, "--json", "--every", "0", "--max-iters", "30", "--checkpoint", ckpt).exit_status == 1
    resumed = cli("run", config, "--json", "--every", "0", "--max-iters", "60", "--resume", ckpt).lines[-1]
    whole = cli("run", config, "--json", "--every", "0", "--max-iters", "60").lines[-1]
    assert (resumed["loss"], resumed["x"], resumed["holdout_rmse"]) == (whole["loss"], whole["x"], whole["holdout_rmse"])


def test_the_end_event_carries_a_matrix_models_parameters(cli, tmp_path):
    import numpy as np

    saved = tmp_path / "fit.npz"
    end = cli("run", "configs/linear.yaml", "--json", "--every", "0", "--save", str(saved)).lines[-1]
    with np.load(saved) as archive:
        assert end["params"]["W"]["value"] == archive["W"].tolist() and end["params"]["b"]["value"] == archive["b"].tolist()
    A = np.loadtxt("configs/linear-inputs.csv", delimiter=",")
    B = np.loadtxt("configs/linear-targets.csv", delimiter=",")
    design = np.hstack([A, np.ones((len(A), 1))])
    solution = np.linalg.lstsq(design, B, rcond=None)[0]  # the oracle: [W; b]
    assert set(end["params"]) == {"W", "b"} and "covariance" not in end and "fit" not in end
    # the config's gd stops at ftol = 1e-8: a few parts in a million from the exact solution
    np.testing.assert_allclose(end["params"]["W"]["value"], solution[:-1], atol=1e-5)
    np.testing.assert_allclose(end["params"]["b"]["value"], solution[-1], atol=1e-5)
    lowrank = cli("run", "configs/lowrank.yaml", "--json", "--every", "0", "--max-iters", "3").lines[-1]
    assert lowrank["params"]["U"]["shape"] == [200, 8] and lowrank["params"]["V"]["shape"] == [150, 8]
