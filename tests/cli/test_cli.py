"""The real CLI, in-process and as a subprocess: JSON Lines, exit codes, --set, stdin, output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_process, strict_json
from helpers import sigint_as_at_a_terminal

SEED = str(ROOT / "configs" / "seed.yaml")


def tutorial_oracle(threshold: float = 1e-5) -> tuple[int, float]:
    """The tutorial's loop from configs/seed.yaml's start (torch.rand on the CPU from seed 0)."""
    import torch
    import torch.nn.functional as F

    target = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    x = torch.rand(3, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss, updates = F.mse_loss(x, target), 0
    while loss.item() > threshold:
        loss.backward()
        x = x - 1.0 * x.grad
        x.detach_()
        x.requires_grad_(True)
        loss, updates = F.mse_loss(x, target), updates + 1
    return updates, loss.item()


def test_seed_json_every_1_is_start_steps_end(cli):
    result = cli("run", SEED, "--json", "--every", "1")
    assert result.exit_status == 0
    events = result.lines
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    steps = events[1:-1]
    assert [e["event"] for e in steps] == ["step"] * len(steps)
    assert [e["iter"] for e in steps] == list(range(1, len(steps) + 1))
    end = events[-1]
    assert end["status"] == "converged" and end["iters"] == len(steps)
    iters, loss = tutorial_oracle()
    assert (end["iters"], end["loss"]) == (iters, loss)
    assert set(events[0]) >= {"config", "device", "dtype", "shape", "loss"}
    assert set(steps[0]) >= {"iter", "loss", "x", "grad_norm"}
    assert set(end) >= {"status", "iters", "loss", "x", "elapsed_s", "updates_per_s"}
    assert result.stderr == ""


@pytest.mark.parametrize(
    "overrides,status,code",
    [
        ([], "converged", 0),
        (["--max-iters", "3"], "max_iters", 1),
        (["--set", "learning_rate=30"], "diverged", 3),
        (["--set", "patience=5", "--set", "loss=l1", "--set", "threshold=0"], "stalled", 1),
    ],
)
def test_exit_codes_come_from_real_runs(cli, overrides, status, code):
    result = cli("run", SEED, "--json", "--every", "0", *overrides)
    assert result.exit_status == code
    events = result.lines
    assert [e["event"] for e in events] == ["start", "end"]
    assert events[-1]["status"] == status


def test_divergence_message_names_the_stable_rate(cli):
    result = cli("run", SEED, "--set", "learning_rate=30", "--json", "--every", "0")
    assert "for mse on 9 elements, gd diverges above lr = 9" in result.stderr
    assert result.lines[-1]["status"] == "diverged"


def test_non_finite_numbers_are_null_in_json(cli):
    result = cli("run", SEED, "--json", "--set", "learning_rate=1e30", "--set", "divergence_factor=1e300",
                 "--set", "dtype=float32", "--every", "1")
    assert result.exit_status == 3
    end = result.lines[-1]  # strict parse: NaN/Infinity tokens would raise
    # x moves by about 1e29 in one update, so its mean squared error overflows float32
    assert (end["status"], end["iters"], end["loss"]) == ("diverged", 1, None)
    assert result.lines[-2]["loss"] is None and all(isinstance(v, float) for row in end["x"] for v in row)


def test_set_and_flags_override_in_order(cli):
    result = cli("config", SEED, "--set", "learning_rate=0.5", "--set", "optimizer=adam",
                 "--set", "optimizer.betas=[0.8, 0.9]", "--json")
    config = result.json
    assert config["learning_rate"] == 0.5
    assert config["optimizer"] == {"name": "adam", "betas": [0.8, 0.9], "eps": 1e-8}
    run = cli("run", SEED, "--json", "--every", "0", "--set", "max_iters=50", "--max-iters", "2")
    assert run.lines[0]["config"]["max_iters"] == 2  # the flag wins over --set


def test_stdin_config(cli):
    text = (ROOT / "configs" / "seed.yaml").read_text()
    result = cli("run", "-", "--json", "--every", "0", stdin=text)
    assert result.exit_status == 0
    assert result.lines[-1]["status"] == "converged"


def test_output_document(cli, tmp_path):
    out = tmp_path / "result.json"
    result = cli("run", SEED, "--every", "0", "--json", "--output", str(out))
    doc = strict_json(out.read_text())
    end = result.lines[-1]
    for key in ("status", "iters", "loss", "x"):
        assert doc[key] == end[key]
    assert doc["config"]["learning_rate"] == 1.0
    assert doc["history"]["iter"] == list(range(end["iters"] + 1))
    assert doc["history"]["loss"][-1] == end["loss"]
    assert doc["versions"]["gdfit"] and doc["versions"]["torch"] and doc["seed"] == 0 and doc["device"]


def test_output_is_written_on_divergence(cli, tmp_path):
    out = tmp_path / "diverged.json"
    result = cli("run", SEED, "--every", "0", "--set", "learning_rate=30", "--output", str(out))
    assert result.exit_status == 3
    assert strict_json(out.read_text())["status"] == "diverged"


def test_output_into_a_missing_folder_is_refused_before_running(cli, tmp_path):
    result = cli("run", SEED, "--json", "--output", str(tmp_path / "nope" / "r.json"))
    assert result.exit_status == 2
    assert "does not exist" in result.stderr
    assert result.lines == [{"event": "error", "kind": "output", "message": result.lines[0]["message"]}]


def test_human_table_and_panel(cli):
    result = cli("run", SEED)
    assert result.exit_status == 0
    assert "converged" in result.stdout and "updates/s" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_config_prints_resolved_yaml(cli):
    result = cli("config", SEED)
    assert result.exit_status == 0
    assert "learning_rate: 1.0" in result.stdout and "max_iters: 10000" in result.stdout


def test_config_advise(cli):
    result = cli("config", SEED, "--advise", "--json")
    advice = result.json["advice"]
    assert advice["curvature"] == pytest.approx(2 / 9)
    assert advice["max_stable_lr"] == pytest.approx(9)


def test_config_schema_lists_every_key(cli):
    from gdfit.config import KEYS

    rows = cli("config", "--schema", "--json").json
    assert [row["key"] for row in rows] == list(KEYS)


def test_help_explains_options_with_examples(cli):
    top = cli("--help")
    assert top.exit_status == 0 and "Examples" in top.stdout
    run = cli("run", "--help").stdout
    for option in ("--json", "--every", "--set", "--output", "--device", "--seed", "--max-iters", "Examples"):
        assert option in run


def test_version(cli):
    from gdfit import __version__

    assert cli("--version").stdout.strip() == f"gdfit {__version__}"


@pytest.mark.slow
def test_help_version_and_schema_do_not_import_torch():
    # `gdfit config CONFIG` does: it checks a config as `gdfit run` does (files, model, optimizer)
    code = (
        "import sys; from gdfit.cli.app import main\n"
        "for args in (['--help'], ['--version'], ['config', '--schema']):\n"
        "    try: main(args)\n"
        "    except SystemExit: pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "False"


@pytest.mark.slow
def test_subprocess_run_and_exit_codes():
    ok = run_process("run", "configs/seed.yaml", "--json", "--every", "1")
    assert ok.exit_status == 0
    assert all(isinstance(e, dict) for e in ok.lines)
    bad = run_process("run", "configs/seed.yaml", "--set", "learning_rate=-1")
    assert bad.exit_status == 2
    assert "learning_rate: must be a number > 0, got -1" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_saves(tmp_path, sig):
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gdfit", "run", "configs/seed.yaml", "--json", "--every", "0",
         "--set", "learning_rate=1e-9", "--set", "threshold=0", "--max-iters", "1000000000", "--output", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_at_a_terminal,
    )
    first = proc.stdout.readline()  # the start event: the loop is running
    assert json.loads(first)["event"] == "start"
    time.sleep(0.5)
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    end = strict_json(rest.strip().splitlines()[-1])
    assert end["event"] == "end" and end["status"] == "interrupted" and end["iters"] > 0
    assert strict_json(out.read_text())["status"] == "interrupted"
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--json", "--no-json"])
def test_broken_pipe_is_quiet(mode):
    flags = "--json --set learning_rate=1e-3" if mode == "--json" else ""
    proc = subprocess.run(
        f"{sys.executable} -m gdfit run configs/seed.yaml --every 1 {flags} | head -n 2",
        shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert len(proc.stdout.splitlines()) == 2
    assert proc.stderr == ""


def test_config_reference_lists_every_key():
    """The documentation's config reference (generated by docs/hooks.py from the models, the
    README's table before it) lists every key."""
    import importlib.util

    from gdfit.config import KEYS

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    reference = hooks.config_table()
    for key in KEYS:
        assert f"| `{key}` |" in reference, key
    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    assert hooks.on_page_markdown(page, None, None, None).count("\n| `") == len(KEYS)


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    command = [line for line in ci.splitlines() if "pytest" in line][0].strip()
    assert command in (ROOT / "README.md").read_text()


def test_warnings_go_to_stderr_and_json_stays_clean(cli):
    result = cli("run", SEED, "--json", "--set", "threshold=1e-20", "--max-iters", "5")
    assert "gdfit: warning: threshold 1e-20 is below" in result.stderr
    assert result.lines[0]["warnings"] and all(isinstance(e, dict) for e in result.lines)


@pytest.mark.slow
@pytest.mark.parametrize("how", [["--debug"], []])
def test_debug_shows_the_traceback(how):
    env = {} if how else {"GDFIT_DEBUG": "1"}
    result = run_process("run", "no-such-config.yaml", *how, env=env)
    assert result.exit_status == 2
    assert "Traceback" in result.stderr and "no such config file" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "configs/seed.yaml", "--jsn"], "unknown option --jsn (did you mean --json?)"),
        (["run"], "CONFIG: is required"),
        (["plot", "-o", "x.png"], "FILE...: is required"),
        (["run", "configs/seed.yaml", "--every", "abc"], "--every: must be an integer, got 'abc'"),
        (["run", "configs/seed.yaml", "--every", "-1"], "--every: must be >= 0, got '-1'"),
        (["run", "configs/seed.yaml", "--checkpoint-every", "x"], "--checkpoint-every: must be a number, got 'x'"),
        (["run", "configs/seed.yaml", "surplus"], "unexpected extra argument: surplus"),
        (["rn"], "no such command 'rn' (did you mean 'run'?)"),
    ],
)
def test_usage_errors_read_like_gdfit_errors(cli, args, message):
    result = cli(*args)
    assert result.exit_status == 2
    first, hint = result.stderr.splitlines()
    assert first == f"gdfit: error: {message}"
    assert hint.startswith("  hint: see 'gdfit") and hint.endswith(" --help'")
    assert "Error:" not in result.stderr and "Usage:" not in result.stderr


def test_usage_error_under_json_is_an_error_event(cli):
    result = cli("run", "configs/seed.yaml", "--json", "--every", "abc")
    assert result.exit_status == 2
    assert result.lines == [{"event": "error", "kind": "usage", "message": "--every: must be an integer, got 'abc'",
                             "hint": "see 'gdfit run --help'"}]


@pytest.mark.parametrize("command,usage", [("run", "CONFIG"), ("config", "[CONFIG]"), ("sweep", "[CONFIG]"),
                                           ("plot", "FILE...")])
def test_help_names_arguments_plainly(cli, command, usage):
    text = cli(command, "--help").stdout
    assert text.splitlines()[0] == f"Usage: gdfit {command} [OPTIONS] {usage}"
    assert "{" not in text.splitlines()[0] and "<str>" not in text and "<path>" not in text


def test_debug_is_listed_in_help(cli):
    assert "--debug" in cli("--help").stdout.split("Options:", 1)[1]
