"""The bounded YAML reader: the alias budget sits exactly at the README's 100,000 values."""

from __future__ import annotations

import pytest
import yaml

from gdfit.yamlsource import load_yaml

BUDGET = 100_000  # README: "a budget of 100,000 values after expansion"
BLOCK = 1_000


def aliased_document(total: int) -> str:
    """A valid config whose keys and values number `total` once aliases are expanded.

    The bulk sits under `sweep:`, which `gdfit config` accepts as any mapping: one anchored block
    of 1,000 zeros, copied by alias, topped up with plain zeros.
    """
    fixed = 3 + 1 + (1 + BLOCK) + 1 + 1  # target and its 2 values, sweep, block, copies, rest
    copies, rest = divmod(total - fixed, BLOCK)
    return (
        "target: [1, 2]\n"
        "sweep:\n"
        f"  block: &b [{', '.join(['0'] * BLOCK)}]\n"
        f"  copies: [{', '.join(['*b'] * copies)}]\n"
        f"  rest: [{', '.join(['0'] * rest)}]\n"
    )


def expanded_size(value) -> int:
    """Keys plus leaf values of PyYAML's own reading (aliases are repeated references there)."""
    if isinstance(value, dict):
        return sum(1 + expanded_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(expanded_size(v) for v in value)
    return 1


@pytest.mark.parametrize("total", [BUDGET, BUDGET + 1])
def test_the_document_builder_counts_like_pyyaml(total):
    assert expanded_size(yaml.safe_load(aliased_document(total))) == total


def test_a_document_of_exactly_the_budget_is_accepted(cli, write_config):
    result = cli("config", write_config(aliased_document(BUDGET)), "--json")
    assert result.exit_status == 0, result.stderr
    assert len(result.json["sweep"]["copies"]) == 98  # 98,000 of the values are aliases


def test_one_value_over_the_budget_is_refused(cli, write_config):
    result = cli("config", write_config(aliased_document(BUDGET + 1)), "--json")
    assert result.exit_status == 2
    assert "document holds more than 100,000 values (after expanding aliases)" in result.stderr
    assert "Traceback" not in result.stderr


def test_positions_point_at_values_and_keys():
    doc = load_yaml("target: [1, 2]\noptimizer:\n  name: adam\n  eps: 1e-8\n", "t")
    assert doc.data == {"target": [1, 2], "optimizer": {"name": "adam", "eps": 1e-8}}
    assert doc.position(("optimizer", "eps")) == (4, 8)
    assert doc.position(("target", 1)) == (1, 13)
    assert doc.position(("optimizer", "eps", "deeper")) == (4, 8)  # the longest known prefix
