"""lowrank's own least squares: `optimizer: als` (alternating exact solves) against the SVD and
numpy's lstsq, lm's Jacobian from U and V against torch's forward-mode Jacobian, and lm's refusal
where its dense solve is too slow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdfit.config import build_config
from gdfit.engine.descent import make_stepper, prepare
from gdfit.errors import ConfigError
from tests.helpers import fit, resolved

SIXTY_BY_FORTY = {"random": {"shape": [60, 40], "seed": 0}}


def truncated_svd_loss(target: torch.Tensor, rank: int, l2: float = 0.0) -> float:
    """min over U [m, r], V [n, r] of (|U V^T - T|^2 + l2 (|U|^2 + |V|^2)) / (m n): the SVD
    truncated to rank r with each singular value shrunk by l2 (Eckart-Young; soft-thresholding)."""
    s = torch.linalg.svdvals(target.double())
    kept = s[:rank]
    shrunk = (kept - l2).clamp_min(0)
    return float((kept.square() - shrunk.square()).sum() + s[rank:].square().sum()) / target.numel()


@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_als_reaches_the_truncated_svd_optimum_of_a_60_by_40_matrix(l2):
    data = dict(target=SIXTY_BY_FORTY, model={"name": "lowrank", "rank": 5, "l2": l2}, dtype="float64",
                optimizer="als", max_iters=2000)
    _, result, descent = fit(every=0, **data)
    best = truncated_svd_loss(descent.problem.target, 5, l2)
    assert result.status == "converged"
    assert abs(result.loss - best) <= 1e-6 * best
    assert all(b <= a * (1 + 1e-12) for a, b in zip(result.history, result.history[1:]))  # never rises


def test_each_half_step_is_numpys_least_squares_over_each_rows_fitted_entries():
    g = np.random.default_rng(3)
    target = g.normal(size=(7, 6))
    mask = g.random((7, 6)) < 0.7
    data = dict(target=target.tolist(), mask=mask.astype(float).tolist(), model={"name": "lowrank", "rank": 2, "l2": 0.3},
                dtype="float64", optimizer="als")
    problem = prepare(resolved(**data))
    stepper = make_stepper(problem, problem.x0[None])
    V = stepper.params["V"][0].numpy().copy()
    stepper.advance(1, 1.0, None)
    U = stepper.params["U"][0].numpy()
    for i in range(7):  # row i: lstsq of its observed entries, with sqrt(l2) I below
        design = np.vstack([V[mask[i]], np.sqrt(0.3) * np.eye(2)])
        rhs = np.concatenate([target[i, mask[i]], np.zeros(2)])
        assert U[i] == pytest.approx(np.linalg.lstsq(design, rhs, rcond=None)[0], rel=1e-10, abs=1e-12)
    V_new = stepper.params["V"][0].numpy()
    for j in range(6):  # then column j, with the new U
        design = np.vstack([U[mask[:, j]], np.sqrt(0.3) * np.eye(2)])
        rhs = np.concatenate([target[mask[:, j], j], np.zeros(2)])
        assert V_new[j] == pytest.approx(np.linalg.lstsq(design, rhs, rcond=None)[0], rel=1e-10, abs=1e-12)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), observed=st.floats(0.5, 1.0), rank=st.integers(1, 3))
def test_als_never_raises_the_loss_with_missing_entries(seed, observed, rank):
    g = np.random.default_rng(seed)
    mask = g.random((9, 8)) < observed
    mask[:, 0] = mask[0, :] = True  # every row and column keeps an entry
    data = dict(target=g.normal(size=(9, 8)).tolist(), mask=mask.astype(float).tolist(), model={"name": "lowrank", "rank": rank},
                dtype="float64", optimizer="als", max_iters=30, seed=seed)
    _, result, _ = fit(every=0, **data)
    assert all(b <= a * (1 + 1e-12) + 1e-15 for a, b in zip(result.history, result.history[1:]))


def test_sweeps_of_als_hold_stopped_runs_and_match_single_runs():
    from pathlib import Path

    from gdfit.sweeps import backends
    from gdfit.sweeps.grid import expand

    base = {"target": {"random": {"shape": [12, 10], "seed": 1}}, "model": {"name": "lowrank", "rank": 3},
            "optimizer": "als", "max_iters": 300, "holdout": 0.2, "dtype": "float64", "device": "cpu"}
    runs = list(expand(base, {"seed": [0, 1, 2]}, "test", Path(".")))
    *_, results = backends.execute(runs, 200, lambda: False)
    iters = set()
    for run, record in zip(runs, results):
        _, alone, _ = fit(every=0, **{**base, "seed": run.params["seed"]})
        assert (record.status, record.iters, repr(record.loss)) == (alone.status, alone.iters, repr(alone.loss))
        iters.add(record.iters)
    assert len(iters) > 1  # runs stopped at different updates: the batch held the first ones still


def test_lms_lowrank_jacobian_from_u_and_v_is_torchs_forward_mode_jacobian():
    from gdfit.fitting.lm import jacobian

    data = dict(target=torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64).tolist(),
                model={"name": "lowrank", "rank": 2}, dtype="float64", optimizer="lm")
    problem = prepare(resolved(**data))
    flat = torch.randn(3, problem.model.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    by_autograd = jacobian(lambda f: problem.model.predict(problem.model.parameters(f)).flatten(1), flat)
    assert torch.equal(problem.model.prediction_jacobian(flat), by_autograd)


def test_lm_on_lowrank_with_l2_and_missing_entries_matches_its_autograd_jacobian():
    from gdfit.fitting.lm import jacobian

    g = np.random.default_rng(4)
    mask = (g.random((5, 4)) < 0.8).astype(float).tolist()
    data = dict(target=g.normal(size=(5, 4)).tolist(), mask=mask, model={"name": "lowrank", "rank": 2, "l2": 0.2},
                dtype="float64", optimizer="lm")
    problem = prepare(resolved(**data))
    stepper = make_stepper(problem, problem.x0[None])
    flat = stepper.packing.pack(stepper.params)
    assert torch.allclose(stepper._jacobian(flat), jacobian(stepper._residuals, flat), rtol=0, atol=1e-15)


def test_lm_refuses_lowrank_where_its_dense_solve_is_slow_and_names_als():
    problem = prepare(resolved(target=SIXTY_BY_FORTY, model={"name": "lowrank", "rank": 5}, dtype="float64",
                               optimizer="lm"))
    with pytest.raises(ConfigError, match=r"500 parameters.*2,400 x 500.*use als"):
        make_stepper(problem, problem.x0[None])


@pytest.mark.parametrize("data", [
    dict(target=[[1.0, 2.0], [3.0, 4.0]]),  # the identity model
    dict(target=[[1.0, 2.0], [3.0, 4.0]], model={"name": "lowrank", "rank": 1}, loss="l1"),
])
def test_als_is_refused_outside_lowrank_on_mse(data):
    with pytest.raises(ConfigError, match="als alternates exact least-squares solves"):
        prepare(build_config({**data, "optimizer": "als", "device": "cpu"}, source="test", base_dir="."))
