"""Run configuration: precedence, types and clear errors."""

import pytest

from speckd_bench.config.run_config import build_config, parse_sets
from speckd_bench.errors import UserError
from speckd_bench.methods.discovery import discover_methods, method_config


def cfg(**kw):
    discover_methods()
    return build_config(method_config=method_config, **kw)


def test_method_defaults_then_overrides():
    c = cfg(method="speckd", overrides=parse_sets(["method.k=3", "method.divergence=rkl", "train.lr=5e-5"]))
    assert (c.method.gate, c.method.k, c.method.divergence, c.train.lr) == ("speckd", 3, "rkl", 5e-5)
    assert cfg(method="fkl").method.gate == "none"
    assert cfg(method="fkl", overrides={"method.gate": "speckd"}).method.gate == "speckd"


def test_yaml_file_and_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method:\n  k: 7\ntrain:\n  batch_size: 2\n")
    c = cfg(method="speckd", preset="tiny", config_file=path, overrides={"train.batch_size": "3"})
    assert (c.method.k, c.train.batch_size, c.model.teacher) == (7, 3, "tiny-random")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method.kk": "3"}, r"method speckd has no setting 'kk'.*did you mean k\?"),
        ({"method.k": "0"}, r"method.k=0 is out of range"),
        ({"method.k": "abc"}, r"method.k expects an integer"),
        ({"method.beta": "1.5"}, r"beta in \[0, 1\]"),
        ({"train.lr": "-1"}, r"lr > 0"),
        ({"train.batch_size": "0"}, r"batch_size >= 1"),
        (
            {"train.batch_size": str(10**26)},
            r"train.batch_size=10{26} is out of range: integer settings are at most",
        ),
        ({"method.rule": "topp"}, r"method.rule='topp' is not one of"),
        ({"data.max_length": "64", "data.max_prompt_length": "64"}, r"must exceed data.max_prompt_length"),
    ],
)
def test_bad_values_fail_with_one_clear_message(overrides, message):
    with pytest.raises(UserError, match=message):
        cfg(method="speckd", overrides=overrides)


def test_unknown_method_and_preset_suggest_names():
    with pytest.raises(UserError, match="did you mean speckd"):
        cfg(method="spekd")
    with pytest.raises(UserError, match="did you mean tiny"):
        cfg(method="sft", preset="tiy")


def test_a_key_given_twice_in_yaml_fails_naming_file_and_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  lr: 0.1\n  batch_size: 2\n  lr: 0.2\n")
    with pytest.raises(UserError, match=r"twice.yaml:4: malformed YAML \(key 'lr' is given twice\)"):
        cfg(method="speckd", config_file=path)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method:\n  k: 3\n  rule: [topk\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: malformed YAML"):
        cfg(method="speckd", config_file=path)
