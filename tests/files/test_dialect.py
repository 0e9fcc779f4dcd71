"""Data files as people have them: BOM, semicolons, tabs, quoted numbers, trailing commas are read
as the table they mean; Latin-1 bytes and decimal commas are refused with their line."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import ROOT, run_cli
from gdfit.files.data import read_columns

ROWS = [row[:2] for row in csv.reader((ROOT / "configs" / "decay.csv").open())]  # t, y


def _write(path, rows, delimiter=",", quote=False, trailing=False, bom=False, encoding="utf-8"):
    cell = (lambda c: f'"{c}"') if quote else (lambda c: c)
    text = "".join(delimiter.join(cell(c) for c in row) + ("," if trailing else "") + "\n" for row in rows)
    path.write_bytes((("\ufeff" if bom else "") + text).encode(encoding))
    return path


def _expected():
    return {name: np.array([float(r[i]) for r in ROWS[1:]]) for i, name in enumerate(ROWS[0])}


@pytest.mark.parametrize("style", [dict(bom=True), dict(delimiter=";"), dict(delimiter="\t"), dict(quote=True),
                                   dict(trailing=True), dict(delimiter=";", quote=True, bom=True)])
def test_each_dialect_reads_as_the_plain_table(tmp_path, style):
    columns = read_columns(_write(tmp_path / "d.csv", ROWS, **style), lambda n: None)
    expected = _expected()
    assert list(columns) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(columns[name], expected[name])


def test_a_bom_csv_fits_as_the_plain_one(tmp_path):
    config = tmp_path / "fit.yaml"
    config.write_text("data: {file: d.csv}\ntarget: {column: y}\noptimizer: lm\ndtype: float64\n"
                      "model: {expr: 'a * exp(-t / tau) + c', params: {a: 1, tau: 1, c: 0}}\n")
    _write(tmp_path / "d.csv", ROWS)
    plain = run_cli("run", str(config), "--json").lines[-1]
    _write(tmp_path / "d.csv", ROWS, bom=True, delimiter=";")
    excel = run_cli("run", str(config), "--json").lines[-1]
    assert plain["params"] == excel["params"] and plain["status"] == "converged"


def test_latin1_bytes_are_refused_with_their_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("t,y\n# mesuré\n0,1.5\n".encode("latin-1"))
    config = tmp_path / "fit.yaml"
    config.write_text("data: {file: d.csv}\ntarget: {column: y}\nmodel: {expr: 'a * t', params: {a: 1}}\n")
    result = run_cli("run", str(config))
    assert result.exit_status == 2
    assert "line 2, column 8: byte 0xe9 is not UTF-8 text" in result.stderr and "save the file as UTF-8" in result.stderr


def test_a_decimal_comma_is_refused_with_its_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("t;y\n0;1,5\n")
    with pytest.raises(Exception, match=r"line 2: '1,5' has a decimal comma"):
        read_columns(path, lambda n: None)


def test_a_semicolon_target_csv_and_a_target_with_trailing_missing_entries(tmp_path):
    (tmp_path / "t.csv").write_text('0.1;0.2\n"0.3";0.4\n')
    (tmp_path / "a.yaml").write_text("target: {file: t.csv}\nmax_iters: 1\n")
    result = run_cli("run", str(tmp_path / "a.yaml"), "--json")
    assert result.lines[0]["shape"] == [2, 2]
    (tmp_path / "r.csv").write_text("1,2,\n3,4,\n")  # no header: an empty last cell is a missing entry
    (tmp_path / "b.yaml").write_text("target: {file: r.csv}\nmodel: {name: lowrank, rank: 1}\nmax_iters: 1\n")
    result = run_cli("run", str(tmp_path / "b.yaml"), "--json")
    assert result.lines[0]["shape"] == [2, 3]
