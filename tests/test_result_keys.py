"""The one rule for "does this config give the same results?" (config/result_keys.py)."""

from __future__ import annotations

from speckd_bench.config.result_keys import eval_identity, result_changes, result_config
from speckd_bench.config.run_config import NON_RESULT_KEYS, RunConfig


def test_result_config_drops_the_non_result_keys_and_on_request_the_seed() -> None:
    config = RunConfig().to_dict()
    settings = result_config(config)
    assert not set(NON_RESULT_KEYS) & set(settings)
    assert "seed" in settings and "train.lr" in settings
    assert result_config(config, with_seed=False) == {k: v for k, v in settings.items() if k != "seed"}


def test_result_changes_name_only_result_changing_settings() -> None:
    old = RunConfig()
    new = RunConfig()
    new.results_dir, new.train.checkpoint_every, new.eval.backend = "elsewhere", 7, "static"
    assert result_changes(old.to_dict(), new.to_dict()) == []
    new.train.lr = 0.5
    assert result_changes(old.to_dict(), new.to_dict()) == [f"train.lr {old.train.lr!r} -> 0.5"]


def test_eval_identity_ignores_which_scores_a_run_makes() -> None:
    cfg = RunConfig()
    other = RunConfig()
    other.eval.eval_before, other.eval.suite, other.eval.backend = False, "pair", "static"
    models = {"teacher_fingerprint": "f"}
    assert eval_identity(cfg, models) == eval_identity(other, models)
    other.eval.max_new_tokens += 1
    assert eval_identity(cfg, models) != eval_identity(other, models)
