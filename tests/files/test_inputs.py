"""An input file is called changed only when the saved state and the resume both read it, and its
SHA-256 differs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gdfit.errors import InputFileError
from gdfit.files.inputs import file_digest, input_digests, refuse_changed
from gdfit.files.paths import Use


def _uses(tmp_path: Path, **files: str) -> list[Use]:
    uses = []
    for key, text in files.items():
        path = tmp_path / f"{key}.csv"
        path.write_text(text)
        uses.append(Use(key.replace("_", "."), path, writes=False))
    return uses


def test_the_digest_is_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"1,2\n3,4\n")
    assert file_digest(path) == hashlib.sha256(b"1,2\n3,4\n").hexdigest()
    assert file_digest(tmp_path / "missing.csv") is None


def test_a_file_both_sides_read_with_other_bytes_is_refused_by_name(tmp_path):
    uses = _uses(tmp_path, data_file="t,y\n0,1\n", target_file="1\n")
    saved = input_digests(uses)
    (tmp_path / "data_file.csv").write_text("t,y\n0,2\n")
    with pytest.raises(InputFileError) as err:
        refuse_changed(saved, input_digests(uses), uses, "run.ckpt", "--resume")
    assert "the input file data.file (" in str(err.value) and "target.file" not in str(err.value)


def test_a_key_only_one_side_has_is_not_a_changed_file(tmp_path):
    uses = _uses(tmp_path, data_file="t,y\n0,1\n")
    now = input_digests(uses)
    refuse_changed({}, now, uses, "run.ckpt", "--resume")  # the saved run read no data file
    refuse_changed({"target.file": "0" * 64, **now}, now, uses, "run.ckpt", "--resume")  # nor this one now
    refuse_changed(now, now, uses, "run.ckpt", "--resume")
