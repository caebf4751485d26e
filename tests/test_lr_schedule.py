"""The learning-rate schedule: no update runs at lr 0, and each log row holds the lr its update used."""

import json
import math

import pytest
import torch
from tiny_models import tiny_llama

from speckd_bench.api.method_config import MethodConfig
from speckd_bench.api.methods import Method
from speckd_bench.config.run_config import TrainConfig
from speckd_bench.data.examples import Example
from speckd_bench.engine.trainer import Stage, Trainer, lr_factor

LR = 1e-3


def train(tmp_path, scheduler: str) -> tuple[list[float], list[dict], bool]:
    """Sixteen SFT steps (warm-up int(0.1 * 16) = 1): the lr each optimiser step used, the log rows, and
    whether the first step changed the weights."""
    cfg = TrainConfig(batch_size=2, max_steps=16, scheduler=scheduler, warmup_ratio=0.1, lr=LR)
    stage = Stage(Method("sft", "test", "test", config=MethodConfig), MethodConfig("sft"), cfg, LR, 1, 0, "t")
    student = tiny_llama(0)
    before = [p.detach().clone() for p in student.parameters()]
    moved: list[bool] = []

    def first_step_moved(row: dict, step: int) -> None:
        if step == 1:
            moved.append(
                any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
            )

    examples = [Example([3, 4, 5], [6 + i, 7, 8], "p", ["r"]) for i in range(8)]
    trainer = Trainer(stage, student, None, examples, vocab_size=40, pad_id=0, on_step=first_step_moved)
    used: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    trainer.fit(tmp_path / "log.jsonl", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    return used, rows, moved == [True]


@pytest.mark.parametrize(
    ("scheduler", "third", "last"),
    [
        ("cosine", 0.5 * (1 + math.cos(math.pi / 15)), 0.5 * (1 + math.cos(14 * math.pi / 15))),
        ("linear", 14 / 15, 1 / 15),
        ("constant", 1.0, 1.0),
    ],
)
def test_first_update_has_a_nonzero_lr_and_the_log_holds_each_updates_lr(tmp_path, scheduler, third, last):
    used, rows, first_moved = train(tmp_path, scheduler)
    assert len(used) == len(rows) == 16
    # one warm-up update at half the lr, then the decay from the full lr; none at 0
    assert used[0] == pytest.approx(LR / 2) and used[1] == pytest.approx(LR)
    assert used[2] == pytest.approx(LR * third) and used[-1] == pytest.approx(LR * last)
    assert min(used) > 0 and first_moved
    assert [r["lr"] for r in rows] == used


def test_warm_up_ramps_over_its_updates_below_the_full_lr():
    assert [lr_factor("linear", s, 3, 10) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 6 / 7])
    assert lr_factor("cosine", 0, 0, 10) == 1.0  # no warm-up: the first update at the full lr
