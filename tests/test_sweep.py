"""gdfit sweep from the command line: grids, errors, JSON, exit codes."""

from __future__ import annotations

import pytest
from conftest import ROOT, strict_json

from gdfit.errors import ConfigError
from gdfit.sweep import parse_values

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

    import gdfit.tensors
    from gdfit.sweep import execute, expand

    monkeypatch.setattr(gdfit.tensors, "available_bytes", lambda device: 100 * 2**20)  # 100 MiB free
    runs = list(expand({"target": {"random": {"shape": [10]}}, "device": "cpu", "max_iters": 1},
                       {"target.random.shape": [[10], [200_000]], "seed": list(range(64))}, "test", Path(".")))
    plan = next(execute(runs, 100, lambda: False))
    # 200,000 float32 elements x 2.5 copies (x, its block of the update, half a copy to spare) =
    # 1.91 MiB a run: 80 MiB of headroom holds 41 of them; the 64 small runs share one batch
    assert (plan.batches, plan.batch_size) == (1 + 2, 64)
    assert "batches hold at most 41 runs to fit in memory" in plan.why


def test_sorting_by_a_grid_key_orders_numbers_as_numbers():
    from gdfit.records import RunRecord
    from gdfit.sweep import sort_results

    runs = [RunRecord({"lr": v}, "converged", 1, 0.0, None) for v in (2, 0.5, 10, 1, 0.25)]
    assert [r.params["lr"] for r in sort_results(runs, "lr")] == [0.25, 0.5, 1, 2, 10]
