"""Data policies: generated sequences keep the prompt masked and the EOS a target; SKD replaces exactly the
proposals outside the teacher's top-K; DistiLLM's schedule; seqkd's cache.
"""

import dataclasses
import sys
from types import SimpleNamespace

import pytest
import torch
from tiny_models import tiny_llama
from transformers import LlamaForCausalLM

from speckd_bench.api.methods import PolicyContext
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.examples import IGNORE, Example, collate
from speckd_bench.evaluation.generate import cut_at_eos, left_pad
from speckd_bench.methods import rollout
from speckd_bench.methods.discovery import discover_methods, method_config

EOS = PAD = 2  # pad == eos, as with SmolLM2: the EOS label must survive anyway
RESPONSE = 3  # the test models emit EOS as their 4th response token
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


class StopsAfter(LlamaForCausalLM):
    """A random tiny Llama that emits EOS once the sequence is `stop_at` tokens long (pad included)."""

    stop_at = 0

    def forward(self, *args, attention_mask=None, cache=None, **kwargs):
        out = super().forward(*args, attention_mask=attention_mask, cache=cache, **kwargs)
        if attention_mask.shape[1] >= self.stop_at:
            out.logits[..., EOS] = 1e4
        return out


def tiny(seed: int) -> StopsAfter:
    model = tiny_llama(seed, StopsAfter, vocab_size=64, pad_token_id=PAD, eos_token_id=EOS).eval()
    model.stop_at = max(map(len, PROMPTS)) + RESPONSE
    return model


def context(name, student, teacher, **method) -> PolicyContext:
    """Method `name`'s own settings (12-token rollouts) with `method` changed."""
    cfg = RunConfig(method=dataclasses.replace(method_config(name)[0], gen_max_new_tokens=12, **method))
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS)
    return PolicyContext(cfg, None, student, teacher, tokenizer, 64, torch.device("cpu"), seed=3)


def examples() -> list[Example]:
    return [Example(p, [20 + i, 30 + i, EOS], "prompt", ["ref"]) for i, p in enumerate(PROMPTS)]


def assert_prompt_masked_and_eos_target(batch, prompts):
    for row, prompt in enumerate(prompts):
        labels = batch.labels[row].tolist()
        ids = batch.input_ids[row].tolist()
        assert labels[: len(prompt) - 1] == [IGNORE] * (len(prompt) - 1)
        targets = [x for x in labels if x != IGNORE]
        assert targets == ids[len(prompt) : len(prompt) + len(targets)]
        assert len(targets) == RESPONSE + 1 and targets[-1] == EOS


def policy(name, ctx):
    return discover_methods().get(name).policy(ctx)


def test_gkd_on_policy_batches_mask_the_prompt_and_keep_eos():
    student = tiny(0)
    gkd = policy("gkd", context("gkd", student, None, lmbda=1.0))
    batch = gkd.micro_batch(examples(), step=1)
    assert_prompt_masked_and_eos_target(batch, PROMPTS)
    assert gkd.end_step(1) == {"on_policy": 1.0}
    off = policy("gkd", context("gkd", student, None, lmbda=0.0))
    expected = collate(examples(), PAD)
    assert torch.equal(off.micro_batch(examples(), step=1).labels, expected.labels)


def test_skd_sequences_mask_the_prompt_and_keep_eos():
    skd = policy("skd", context("skd", tiny(0), tiny(1)))
    batch = skd.micro_batch(examples(), step=1)
    assert_prompt_masked_and_eos_target(batch, PROMPTS)
    row = skd.end_step(1)
    summary = skd.summary()
    assert summary["proposals"] == len(PROMPTS) * (RESPONSE + 1)
    assert row["replaced"] == summary["replaced"] / summary["proposals"]  # the one step is the whole run


def test_skd_replaces_exactly_the_proposals_outside_the_teachers_top_k():
    v = 8
    # Student: row 0 proposes 1, row 1 proposes 6, row 2 proposes 0 (each > 0.5 of the mass, top_p 0.5).
    student = torch.full((3, v), -5.0)
    student[0, 1] = student[1, 6] = student[2, 0] = 5.0
    # Teacher top-2: {0, 1} in rows 0 and 2, {3, 4} in row 1; its nucleus is token 0 / 3.
    teacher = torch.full((3, v), -5.0)
    teacher[:, 0], teacher[:, 1] = 5.0, 2.0
    teacher[1] = -5.0
    teacher[1, 3], teacher[1, 4] = 5.0, 2.0
    narrow = rollout.Sampling(temperature=1.0, top_p=0.5)
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        tokens, replaced = rollout.interleave_step(student, teacher, 2, narrow, narrow, gen)
        assert tokens.tolist() == [1, 3, 0] and replaced.tolist() == [False, True, False]
    # With wide sampling the replacements vary, but only the out-of-top-K positions change.
    wide = rollout.Sampling(temperature=1.0, top_p=1.0)
    torch.manual_seed(0)
    s, t = torch.randn(200, v), torch.randn(200, v)
    tokens, replaced = rollout.interleave_step(s, t, 3, wide, wide, torch.Generator().manual_seed(0))
    proposals = rollout.nucleus_sample(s, wide, torch.Generator().manual_seed(0))
    outside = ~(t.topk(3, dim=-1).indices == proposals[:, None]).any(-1)
    assert torch.equal(replaced, outside)
    assert torch.equal(tokens[~outside], proposals[~outside])
    assert 0 < int(outside.sum()) < 200


def test_interleaving_a_model_with_itself_at_zero_temperature_is_greedy_decoding():
    model = tiny(0)
    model.stop_at = 10**9  # never forced to stop: compare full-length continuations
    cold = rollout.Sampling(temperature=1e-4, top_p=1.0)
    out = rollout.interleaved_responses(
        model,
        model,
        PROMPTS,
        vocab_size=64,
        top_k=1,
        student_sampling=cold,
        teacher_sampling=cold,
        new_tokens=6,
        pad_id=PAD,
        eos_id=EOS,
        generator=torch.Generator().manual_seed(0),
    )
    ids, mask = left_pad(PROMPTS, PAD)
    greedy = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=6,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )
    assert out.responses == [cut_at_eos(r, EOS) for r in greedy[:, ids.shape[1] :].tolist()]
    assert out.replaced == 0


def test_distillm_schedule_rises_with_validation_loss():
    distillm = sys.modules[discover_methods().get("distillm").policy.__module__]
    schedule = distillm.AdaptiveSchedule(prob=0.0, loss_eps=0.1, capacity=4)
    for loss, prob in [(2.0, 0.0), (2.05, 0.0), (2.1, 0.1), (2.15, 0.1), (2.25, 0.2), (1.0, 0.2)]:
        schedule.observe(loss)
        assert schedule.prob == pytest.approx(prob)
    # p = 0.2 at step 5 of 10: fresh student batches below 0.1, replay in [0.1, 0.2) once the buffer is full.
    assert schedule.source(0.05, 5, 10, buffered=4) == "student"
    assert schedule.source(0.15, 5, 10, buffered=4) == "replay"
    assert schedule.source(0.15, 5, 10, buffered=3) == "student"
    assert schedule.source(0.25, 5, 10, buffered=4) == "ground_truth"


def test_seqkd_generates_once_and_reuses_the_cache(monkeypatch):
    teacher = tiny(1)
    first = policy("seqkd", context("seqkd", None, teacher))
    generated = first.prepare(examples(), total_steps=1)
    assert first.summary()["reused"] is False
    assert_prompt_masked_and_eos_target(collate(generated, PAD), PROMPTS)

    def no_generation(*args, **kwargs):
        raise AssertionError("the teacher generated although the responses are cached")

    monkeypatch.setattr(rollout, "sample_responses", no_generation)
    second = policy("seqkd", context("seqkd", None, teacher))
    again = second.prepare(examples(), total_steps=1)
    assert second.summary()["reused"] is True
    assert [e.target_ids for e in again] == [e.target_ids for e in generated]
    # Other decoding settings are another cache entry.
    with pytest.raises(AssertionError, match="teacher generated"):
        policy("seqkd", context("seqkd", None, teacher, teacher_temperature=0.5)).prepare(examples(), 1)
