"""gdfit sweep from the command line: grids, errors, JSON, exit codes."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, strict_json

from gdfit.errors import ConfigError
from gdfit.sweeps.grid import parse_values

SEED = str(ROOT / "configs" / "seed.yaml")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0..3", [0, 1, 2, 3]),
        ("0.5,1,2", [0.5, 1, 2]),
        ("[0.9,0.99],[0.8,0.9]", [[0.9, 0.99], [0.8, 0.9]]),
        ("linspace(0,1,5)", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("zeros,random", ["zeros", "random"]),
    ],
)
def test_grid_values(text, expected):
    assert parse_values("k", text, "test") == pytest.approx(expected) if isinstance(expected[0], float) \
        else parse_values("k", text, "test") == expected


def test_logspace_spans_decades():
    values = parse_values("learning_rate", "logspace(1e-3,10,5)", "test")
    assert values == pytest.approx([1e-3, 1e-2, 1e-1, 1, 10])


@pytest.mark.parametrize("text", ["logspace(0,1,3)", "linspace(1,2)", "5..1", "logspace(1,2,x)"])
def test_bad_grid_values(text):
    with pytest.raises(ConfigError):
        parse_values("k", text, "test")


def test_sweep_json_events(cli):
    result = cli("sweep", SEED, "--grid", "learning_rate=0.5,1,4.5,20", "--json")
    events = result.lines
    assert [e["event"] for e in events] == ["start"] + ["run"] * 4 + ["end"]
    assert events[0]["runs"] == 4
    runs = events[1:-1]
    assert runs[0]["params"] == {"learning_rate": 4.5} and runs[0]["iters"] == 1  # sorted by updates
    assert events[-1]["counts"] == {"converged": 3, "diverged": 1}
    assert events[-1]["best"]["params"] == {"learning_rate": 4.5}
    assert result.exit_status == 0


def test_sweep_exit_1_when_none_converge(cli):
    result = cli("sweep", SEED, "--grid", "learning_rate=0.001,0.002", "--max-iters", "5", "--json")
    assert result.exit_status == 1
    assert result.lines[-1]["counts"] == {"max_iters": 2}


def test_sweep_section_in_yaml(cli, write_config):
    path = write_config("target: [[1, 2], [3, 4]]\nsweep:\n  learning_rate: [0.5, 1.0]\n  seed: 0..2\n")
    result = cli("sweep", path, "--json")
    assert result.lines[0]["runs"] == 6


@pytest.mark.parametrize(
    "grid,fragment",
    [
        ("sweep=1,2", "cannot sweep 'sweep': the grid cannot sweep itself"),
        ("optimizer=gd,adma", "unknown optimizer 'adma' (did you mean 'adam'?)"),
        ("flavour=1,2", "unknown key 'flavour'; any config key can be swept"),  # no key is close to it
        ("learnig_rate=1,2", "unknown key 'learnig_rate' (did you mean 'learning_rate'?)"),
        ("learning_rate=-1,1", "learning_rate: must be a number > 0"),
        ("learning_rate", "expected KEY=V1,V2"),
    ],
)
def test_bad_sweeps_exit_2(cli, grid, fragment):
    result = cli("sweep", SEED, "--grid", grid)
    assert result.exit_status == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_sweep_output_document(cli, tmp_path):
    out = tmp_path / "sweep.json"
    cli("sweep", SEED, "--grid", "learning_rate=1,2", "--output", str(out))
    doc = strict_json(out.read_text())
    assert len(doc["runs"]) == 2 and doc["grid"] == {"learning_rate": [1, 2]}
    assert doc["best"]["params"] == {"learning_rate": 2}


def test_sweep_human_table(cli):
    result = cli("sweep", SEED, "--grid", "learning_rate=1,20")
    assert "converged" in result.stdout and "diverged" in result.stdout and "best:" in result.stdout


def test_each_group_of_a_sweep_is_sized_by_its_own_memory(monkeypatch):
    """A grid over target shapes: the large target's runs get smaller batches than the small one's."""
    from pathlib import Path

    import gdfit.files.tensors
    from gdfit.sweeps.backends import execute
    from gdfit.sweeps.grid import expand

    monkeypatch.setattr(gdfit.files.tensors, "available_bytes", lambda device: 100 * 2**20)  # 100 MiB free
    runs = list(expand({"target": {"random": {"shape": [10]}}, "device": "cpu", "max_iters": 1},
                       {"target.random.shape": [[10], [200_000]], "seed": list(range(64))}, "test", Path(".")))
    plan = next(execute(runs, 100, lambda: False))
    # 200,000 float32 elements x 2.5 copies (x, its block of the update, half a copy to spare) =
    # 1.91 MiB a run: 80 MiB of headroom holds 41 of them; the 64 small runs share one batch
    assert (plan.batches, plan.batch_size) == (1 + 2, 64)
    assert "batches hold at most 41 runs to fit in memory" in plan.why


def test_sorting_by_a_grid_key_orders_numbers_as_numbers():
    from gdfit.records import RunRecord
    from gdfit.sweeps.grid import sort_results

    runs = [RunRecord({"lr": v}, "converged", 1, 0.0, None) for v in (2, 0.5, 10, 1, 0.25)]
    assert [r.params["lr"] for r in sort_results(runs, "lr")] == [0.25, 0.5, 1, 2, 10]


# --- expand: each grid value validated once, the same configs as validating every combination -----

EXPAND_BASE = {"target": [[1.0, 2.0], [3.0, 4.0]], "device": "cpu"}


def each_combination(base: dict, grid: dict, base_dir=None) -> list:
    """The oracle: every combination merged into the base and validated whole, as `gdfit run --set`
    would, with the grid's origins for messages; stops at the first that fails."""
    import itertools
    from pathlib import Path

    from gdfit.config import apply_override, build_config

    configs = []
    for combo in itertools.product(*grid.values()):
        data = json.loads(json.dumps(base))
        for key, value in zip(grid, combo):
            apply_override(data, key.split("."), value)
        origins = {k.split(".")[0]: f"--grid {k}={v:.6g}" if isinstance(v, float) else f"--grid {k}={v}"
                   for k, v in zip(grid, combo)}
        configs.append(build_config(data, source="test", base_dir=base_dir or Path("."), origins=origins).config)
    return configs


@pytest.mark.parametrize(
    "grid",
    [
        {"learning_rate": [0.1, 1.0, 2.5], "seed": [0, 7]},
        {"optimizer": ["gd", "momentum", "adam"], "learning_rate": [0.5, 1], "max_iters": [3, 5]},
        {"optimizer": ["momentum"], "optimizer.momentum": [0.5, 0.9], "schedule": ["exponential", "step"],
         "schedule.gamma": [0.5, 0.9], "threshold": [0, 1e-3]},  # two keys under one: validated together
        {"init": ["zeros", "random", {"name": "normal", "std": 2}], "seed": [1, 2], "dtype": ["float64", "float32"]},
        {"model": ["identity"], "ftol": [None, 1e-9], "loss": ["mse", {"name": "huber", "delta": 2}]},
    ],
)
def test_expand_builds_the_configs_each_combination_validates_to(grid):
    from pathlib import Path

    from gdfit.sweeps.grid import expand

    runs = list(expand(EXPAND_BASE, grid, "test", Path(".")))
    wanted = each_combination(EXPAND_BASE, grid)
    assert [run.resolved.config for run in runs] == wanted  # pydantic equality: every field and fields_set
    assert [run.resolved.config.model_dump(mode="json") for run in runs] == [c.model_dump(mode="json") for c in wanted]
    import itertools

    assert [list(run.params.values()) for run in runs] == [list(c) for c in itertools.product(*grid.values())]


def test_expand_validates_coupled_keys_together():
    """The optimizer picks a curve fit's tolerances (lm: ftol 1e-10, adam: none), so its values are
    validated with each value of the other keys, never set into another combination's config."""
    from gdfit.config import merge_config
    from gdfit.sweeps.grid import expand

    raw = merge_config(str(ROOT / "configs" / "decay.yaml"))
    grid = {"optimizer": ["adam", "lm"], "learning_rate": [0.1, 1.0]}
    runs = list(expand(raw.data, grid, "test", raw.base_dir))
    assert [run.resolved.config for run in runs] == each_combination(raw.data, grid, raw.base_dir)
    assert [run.resolved.config.ftol for run in runs] == [None, None, 1e-10, 1e-10]


@pytest.mark.parametrize(
    "grid",
    [
        {"learning_rate": [1, 2, -3], "seed": [0, 1, "x"]},  # the seed fails first in grid order: (0, 2)
        {"seed": [0, 1, "x"], "learning_rate": [1, 2, -3]},  # now the learning rate does: (0, 2)
        {"optimizer": ["gd", "adma"], "learning_rate": [1, -1]},  # (0, 1) before (1, 0)
        {"learning_rate": [1, 2], "init": ["zeros", [[1, 2, 3]]]},  # a coupled key's bad value
        # each value fits the other key's first one; the last combination's shapes differ
        {"target": [[[1, 2]], [[1, 2], [3, 4]]], "init": ["zeros", [[0, 0]]], "seed": [3]},
    ],
)
def test_expand_raises_the_error_of_the_first_bad_combination(grid):
    from pathlib import Path

    from gdfit.sweeps.grid import expand

    with pytest.raises(ConfigError) as first_bad:
        each_combination(EXPAND_BASE, grid)
    with pytest.raises(ConfigError) as caught:
        list(expand(EXPAND_BASE, grid, "test", Path(".")))
    assert (str(caught.value), caught.value.key) == (str(first_bad.value), first_bad.value.key)


def test_runs_that_share_a_start_equal_their_single_runs():
    """A grid of learning rates by seeds by inits: each distinct start is built once for the batch
    (`sweep._starts`) and given to every run that has it; each run equals its own `gdfit run`."""
    from pathlib import Path

    import torch
    from helpers import fit

    from gdfit.sweeps.backends import execute
    from gdfit.sweeps.grid import expand

    base = {"target": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], "device": "cpu", "max_iters": 200}
    grid = {"learning_rate": [0.3, 1.0], "seed": [0, 1, 0], "init": ["random", "normal", [[1, 2, 3]] * 3]}
    runs = list(expand(base, grid, "test", Path(".")))
    swept = list(execute(runs, 100, lambda: False))[-1]
    starts = set()
    for run, record in zip(runs, swept):
        single = fit(every=0, **base, **run.params)[1]
        assert (record.status, record.iters, repr(record.loss)) == (single.status, single.iters, repr(single.loss))
        assert torch.equal(record.x, single.x), run.params
        starts.add(str(fit(every=0, **{**base, "max_iters": 0}, **run.params)[1].x.tolist()))
    assert len(starts) == 5  # random and normal from seeds 0 and 1, and the inline start


@pytest.mark.parametrize("schedule", [{"name": "step", "step_size": 3, "gamma": 0.5}, "cosine"])
def test_gd_on_mse_with_per_run_rates_under_a_schedule_equals_single_runs(schedule):
    """gd on mse (`steppers.GdOnMse`) keeps the per-run rates it was given for as long as the
    schedule hands over the same tensor; a schedule's new rates each update must be used."""
    from pathlib import Path

    import torch
    from helpers import fit

    from gdfit.sweeps.backends import execute
    from gdfit.sweeps.grid import expand

    base = {"target": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], "device": "cpu", "max_iters": 40,
            "schedule": schedule, "threshold": 0}
    runs = list(expand(base, {"learning_rate": [0.05, 0.2, 0.7]}, "test", Path(".")))
    for run, record in zip(runs, list(execute(runs, 100, lambda: False))[-1]):
        single = fit(every=0, **base, **run.params)[1]
        assert (record.status, record.iters, repr(record.loss)) == (single.status, single.iters, repr(single.loss))
        assert torch.equal(record.x, single.x), run.params


@pytest.mark.parametrize("enabled", [True, False])
def test_expand_leaves_the_cycle_collector_as_it_found_it(enabled):
    import gc
    from pathlib import Path

    from gdfit.sweeps.grid import expand

    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        assert len(list(expand(EXPAND_BASE, {"learning_rate": [0.1, 0.2], "seed": [0, 1]}, "test", Path(".")))) == 4
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()
