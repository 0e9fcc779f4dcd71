"""The bounded YAML reader: the alias budget sits exactly at the README's 100,000 values, counting
every key, value, list and mapping; plain values are read as YAML 1.2 reads them."""

from __future__ import annotations

import pytest
import yaml

from gdfit.config.yamlsource import load_yaml

BUDGET = 100_000  # README: "a budget of 100,000 values after expansion"
BLOCK = 1_000


def aliased_document(total: int) -> str:
    """A valid config whose nodes (keys, values, lists, mappings) number `total` once aliases are
    expanded. The bulk sits under `sweep:`, which `gdfit config` accepts as any mapping: one
    anchored block of 1,000 zeros, copied by alias, topped up with plain zeros.
    """
    # the root, target (key, list, 2 values), sweep (key, mapping), block (key, list, values),
    # copies (key, list), rest (key, list); each copy is a list of BLOCK values
    fixed = 1 + 4 + 2 + (2 + BLOCK) + 2 + 2
    copies, rest = divmod(total - fixed, BLOCK + 1)
    return (
        "target: [1, 2]\n"
        "sweep:\n"
        f"  block: &b [{', '.join(['0'] * BLOCK)}]\n"
        f"  copies: [{', '.join(['*b'] * copies)}]\n"
        f"  rest: [{', '.join(['0'] * rest)}]\n"
    )


def expanded_size(value) -> int:
    """Keys, values, lists and mappings of PyYAML's own reading (aliases are repeated references there)."""
    if isinstance(value, dict):
        return 1 + sum(1 + expanded_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(expanded_size(v) for v in value)
    return 1


@pytest.mark.parametrize("total", [BUDGET, BUDGET + 1])
def test_the_document_builder_counts_like_pyyaml(total):
    assert expanded_size(yaml.safe_load(aliased_document(total))) == total


def test_a_document_of_exactly_the_budget_is_accepted(cli, write_config):
    result = cli("config", write_config(aliased_document(BUDGET)), "--json")
    assert result.exit_status == 0, result.stderr
    assert len(result.json["sweep"]["copies"]) == 98  # 98,098 of the nodes are aliases


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


def test_aliases_of_empty_lists_count_against_the_budget(cli, write_config):
    """377 bytes of nested empty-list aliases expand to millions of lists and no scalar at all."""
    text = "a: &a [[], [], [], [], [], [], [], [], [], []]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdef", "bcdefg"))
    assert len(text) < 400 and expanded_size(yaml.safe_load(text)) > 10**6
    result = cli("config", write_config(text))
    assert result.exit_status == 2
    assert "more than 100,000 values" in result.stderr


@pytest.mark.parametrize("text,value", [
    ("010", 10), ("0o17", 15), ("0x1f", 31), ("1e-5", 1e-5), ("-.5", -0.5), ("+3", 3), ("true", True),
    ("1:30", "1:30"), ("1_000", "1_000"), ("0b11", "0b11"), ("yes", "yes"), ("off", "off"), ("2001-12-14", "2001-12-14"),
])
def test_plain_values_are_read_as_yaml_1_2_reads_them(text, value):
    assert load_yaml(f"v: {text}\n", "t").data == {"v": value}


@pytest.mark.parametrize("text,fragment", [
    ("a: 1\n\tb: 2\n", "YAML indents with spaces only"),
    ("a: 1\n---\nb: 2\n", "a config is one document"),
    ("<<: {a: 1}\n", "merge keys (<<) are not supported"),
    ("a: " + "9" * 5000 + "\n", "an integer of 5,000 digits"),
])
def test_yaml_problems_in_plain_words(text, fragment):
    from gdfit.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_yaml(text, "t")
    assert fragment in str(err.value)
    assert "token" not in str(err.value) and "tag:yaml.org" not in str(err.value)
