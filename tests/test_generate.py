"""Evaluation decoding: the static-cache backend gives transformers generate's greedy outputs on the same
prompts, reuses its per-bucket cache, bad backends fail with one line, and the raw decode (special tokens
kept) reaches every sample beside the cleaned text."""

import sys

import pytest
import torch
from tiny_models import tiny_llama
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

import speckd_bench.evaluation.generate as gen
from speckd_bench.benchmarks.generate import format_table, main
from speckd_bench.cli.app import main as cli_main
from speckd_bench.config.run_config import EvalConfig
from speckd_bench.data.examples import Example
from speckd_bench.evaluation.evaluate import evaluate
from speckd_bench.evaluation.generate import (
    buckets_built,
    cut_at_eos,
    decode,
    generate,
    left_pad,
    prompt_positions,
)

VOCAB = 64
PAD = 0


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    return tiny_llama(0, vocab_size=VOCAB, pad_token_id=PAD, **shape).eval()


def prompts(n: int, seed: int, lengths: tuple[int, int] = (3, 21)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(*lengths, (n,), generator=g).tolist()
    return [torch.randint(1, VOCAB, (k,), generator=g).tolist() for k in sizes]


def run(model, ps, backend: str, eos: int | None, new_tokens: int = 12, batch: int = 4) -> list[list[int]]:
    cfg = EvalConfig(max_new_tokens=new_tokens, batch_size=batch, backend=backend)
    return decode(model, ps, cfg, seed=0, pad_id=PAD, eos_id=eos)


def test_static_greedy_equals_transformers_generate(model):
    ps = prompts(11, seed=1)  # batches of 4, 4 and 3: the last one gets a padding row
    reference = run(model, ps, "dynamic", eos=None)
    assert all(len(r) == 12 for r in reference)
    assert run(model, ps, "static", eos=None) == reference
    # an EOS that ends some rows early and not others (greedy tokens before the EOS do not depend on it)
    eos = next(
        t for r in reference for t in r[1:] if 0 < sum(t in x[:-1] for x in reference) < len(reference)
    )
    expected = [cut_at_eos(r, eos) for r in reference]
    assert run(model, ps, "dynamic", eos=eos) == expected
    assert run(model, ps, "static", eos=eos) == expected
    assert min(map(len, expected)) < 12 == max(map(len, expected))


def test_static_stops_once_every_row_has_eos(model, monkeypatch):
    ps = prompts(3, seed=2)
    reference = run(model, ps, "dynamic", eos=None, new_tokens=40)
    eos = reference[0][1]
    ps = [p for p, r in zip(ps, reference, strict=True) if eos in r[:8]]
    monkeypatch.setattr(gen, "CHECK_EVERY", 2)
    calls = []
    step = gen._greedy_step
    monkeypatch.setattr(gen, "_greedy_step", lambda *a: calls.append(1) or step(*a))
    out = run(model, ps, "static", eos=eos, new_tokens=40)
    assert out == [cut_at_eos(r, eos) for r in run(model, ps, "dynamic", eos=None, new_tokens=40)]
    assert len(calls) < 10


def test_bucket_is_built_once_and_reused(model):
    first = prompts(4, seed=3, lengths=(20, 30))
    run(model, first, "static", eos=None)
    built = buckets_built()
    second = prompts(3, seed=4, lengths=(10, 30))  # another batch, same (rows, cache length) bucket
    assert run(model, second, "static", eos=None) == run(model, second, "dynamic", eos=None)
    assert buckets_built() == built
    run(model, prompts(4, seed=5, lengths=(60, 70)), "static", eos=None)  # a longer cache: a new bucket
    assert buckets_built() == built + 1


def test_a_model_cast_in_place_gets_caches_of_its_new_dtype():
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    model = tiny_llama(0, vocab_size=VOCAB, pad_token_id=PAD, **shape).eval()
    ps = prompts(4, seed=7)
    run(model, ps, "static", eos=None)
    model.to(torch.bfloat16)
    assert run(model, ps, "static", eos=None) == run(model, ps, "dynamic", eos=None)


def test_compiled_step_traces_as_one_graph_and_matches_eager(model):
    """The step CUDA runs compiled: dynamo must trace it whole (no graph breaks) and give the same tokens."""
    ps = prompts(3, seed=6)
    ids, mask = left_pad(ps, PAD)
    length = 64
    full = torch.cat([mask, torch.ones(3, length - ids.shape[1], dtype=torch.long)], dim=1)
    compiled = torch.compile(gen._greedy_step, fullgraph=True, backend="eager", dynamic=False)
    tokens = []
    bucket = gen._bucket(model, 3, length)
    for step in (gen._greedy_step, compiled):
        bucket.cache.reset()
        cache, bucket_arg = bucket.cache, bucket.cache_arg
        positions = prompt_positions(mask)
        with torch.no_grad():
            inputs = {"input_ids": ids, "attention_mask": full, "position_ids": positions, bucket_arg: cache}
            token = model(**inputs, use_cache=True).logits[:, -1].argmax(-1)
            seen = [token]
            for k in range(3):
                position = mask.sum(-1, keepdim=True) + k
                token = step(model, cache, bucket_arg, token[:, None], position, full)
                seen.append(token)
        tokens.append(torch.stack(seen, 1))
    assert torch.equal(tokens[0], tokens[1])
    assert tokens[0].tolist() == run(model, ps, "dynamic", eos=None, new_tokens=4)


def test_auto_decodes_through_transformers_generate(model, monkeypatch):
    monkeypatch.setattr(gen, "_decode_static", lambda *a: pytest.fail("auto took the static path"))
    ps = prompts(5, seed=7)
    assert run(model, ps, "auto", eos=None) == run(model, ps, "dynamic", eos=None)


@pytest.mark.parametrize("value", ["bogus", "vllm"])
def test_bad_backend_is_one_line(monkeypatch, capsys, value):
    args = ["speckd-bench", "run", "--preset", "tiny", "--set", f"eval.backend={value}"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        cli_main()
    err = capsys.readouterr().err
    fragment = f"eval.backend={value!r} is not one of auto, dynamic, static"
    assert exc.value.code == 2 and err.count("\n") == 1 and fragment in err, err


def test_small_benchmark_reports_identical_outputs():
    rows = main("cpu", "small")
    assert [r["variant"] for r in rows] == ["transformers dynamic", "transformers static", "ours (static)"]
    assert all(r["identical"] == f"{r['batch']}/{r['batch']}" for r in rows)
    assert rows[2]["identical_to_static"] == f"{rows[2]['batch']}/{rows[2]['batch']}"
    assert all(r["new_tokens_per_s"] > 0 for r in rows)
    table = format_table(rows)
    assert "ours (static)" in table and "transformers" in table and "float32" in table


def word_tokenizer(eos: int) -> PreTrainedTokenizerFast:
    """Token i is the word `wi`; 0 is <pad>, `eos` is </s> (both special)."""
    vocab = {f"w{i}": i for i in range(VOCAB)} | {"<pad>": PAD, "</s>": eos}
    del vocab[f"w{PAD}"], vocab[f"w{eos}"]
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>")


def test_generate_keeps_the_raw_decode_with_its_special_tokens(model):
    ps = prompts(6, seed=8)
    reference = run(model, ps, "dynamic", eos=None)
    eos = next(t for r in reference for t in r[1:] if 0 < sum(t in x for x in reference) < len(reference))
    tokenizer = word_tokenizer(eos)
    cfg = EvalConfig(max_new_tokens=12, batch_size=4, backend="dynamic")
    gen = generate(model, tokenizer, ps, cfg, seed=0, label="x", quiet=True)
    ended = [eos in r for r in reference]
    assert any(ended) and not all(ended)
    for raw, text, stopped in zip(gen.raw, gen.texts, ended, strict=True):
        assert raw.endswith("</s>") == stopped and "</s>" not in text
        assert text == raw.removesuffix("</s>").strip()


def test_every_sample_stores_the_raw_output(model):
    ps = prompts(3, seed=9)
    eos = run(model, ps, "dynamic", eos=None)[0][2]
    tokenizer = word_tokenizer(eos)
    examples = [Example(p, [eos], f"prompt {i}", ["w1 w2"]) for i, p in enumerate(ps)]
    cfg = EvalConfig(max_new_tokens=12, batch_size=2, backend="dynamic")
    result = evaluate(model, tokenizer, examples, ("rougeL",), cfg, "x", quiet=True)
    assert result.samples[0]["raw_output"].endswith("</s>")  # its EOS is the third token
    assert all(s["output"] == s["raw_output"].removesuffix("</s>").strip() for s in result.samples)
