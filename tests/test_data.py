"""Rows -> prompts/targets -> batches; errors for bad data."""

import json

import pytest
from transformers import AutoTokenizer

from speckd_bench.config.run_config import DataConfig, EvalConfig
from speckd_bench.data.examples import IGNORE, Example, build_examples, chat_content, collate, prompt_task
from speckd_bench.data.rows import load_rows, read_jsonl
from speckd_bench.data.tasks import discover_tasks
from speckd_bench.errors import UserError
from speckd_bench.evaluation.evaluate import evaluate
from speckd_bench.models.loading import load_teacher, smollm2_dir


def test_labels_mask_prompt_and_padding_but_keep_eos_when_pad_equals_eos():
    eos = pad = 2
    batch = collate([Example([5, 6, 7], [8, 9, eos], "p", ["r"]), Example([5], [8, eos], "p", ["r"])], pad)
    # Row 0: positions 2, 3, 4 predict 8, 9, eos; position 5 is the last token and predicts nothing.
    assert batch.labels[0].tolist() == [IGNORE, IGNORE, 8, 9, eos, IGNORE]
    assert batch.labels[1].tolist() == [8, eos, IGNORE, IGNORE, IGNORE, IGNORE]
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch.n_targets == 5


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{not json}\n')
    with pytest.raises(UserError, match=r"rows.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_row_missing_a_field_names_file_and_line(tmp_path):
    (tmp_path / "dolly").mkdir()
    good = {"instruction": "x", "input": "", "output": "y"}
    rows = [good, {"instruction": "x", "input": ""}]
    (tmp_path / "dolly" / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = discover_tasks().get("dolly")
    with pytest.raises(UserError, match=r"valid.jsonl:2: row lacks field 'output'"):
        load_rows(task, "eval", DataConfig(data_dir=str(tmp_path)))


def test_missing_mirror_file_says_which_file_and_which_flag(tmp_path):
    task = discover_tasks().get("dolly")
    with pytest.raises(UserError, match=r"dolly/valid.jsonl not found .* pass --data-dir"):
        load_rows(task, "eval", DataConfig(data_dir=str(tmp_path)))


def test_real_dolly_rows_render_the_minillm_prompt(real_data):
    task = discover_tasks().get("dolly")
    rows = load_rows(task, "eval", DataConfig(data_dir=str(real_data)))
    assert len(rows) == 500
    assert all(task.render(r) == r["prompt"] for r in rows)
    assert len(load_rows(task, "train", DataConfig(data_dir=str(real_data)))) == 1000


class WordTok:
    """One token per whitespace-separated word; its chat template adds a 6-word header and a 2-word tail."""

    eos_token_id = 2
    HEADER = "<sys> you are helpful </sys> <user>"

    def __init__(self) -> None:
        self.words: list[str] = []

    def __call__(self, text, add_special_tokens=False):
        ids = []
        for word in text.split():
            if word not in self.words:
                self.words.append(word)
            ids.append(10 + self.words.index(word))
        return {"input_ids": ids}

    def decode(self, ids):
        return " ".join(self.words[i - 10] for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt, return_dict):
        return self(f"{self.HEADER} {messages[0]['content']} </user> <assistant>")


def _words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(1, n + 1))


def _chat_example(row: dict, limit: int) -> tuple[Example, WordTok]:
    tok = WordTok()
    cfg = DataConfig(max_length=limit + 20, max_prompt_length=limit, chat_template=True)
    (ex,) = build_examples(discover_tasks().get("dolly"), [row], tok, cfg)
    return ex, tok


def test_chat_prompts_hold_the_task_content_without_the_alpaca_scaffold():
    task = discover_tasks().get("dolly")
    assert chat_content(task.prompt) == "{instruction}"
    assert chat_content(task.prompt_with_input) == "{instruction}\n\n{input}"
    assert (
        chat_content(discover_tasks().get("dialogsum").prompt)
        == "Summarize the following dialogue.\n\n{dialogue}"
    )
    assert chat_content("Q: {question}\nA:") == "Q: {question}\nA:"
    ex, tok = _chat_example({"instruction": "Name a fish.", "input": "Tope or rope", "output": "Tope"}, 64)
    assert ex.prompt == "Name a fish.\n\nTope or rope"
    assert tok.decode(ex.prompt_ids) == f"{tok.HEADER} Name a fish. Tope or rope </user> <assistant>"
    assert (ex.prompt_cut, ex.prompt_tokens) == (False, 14)  # 6 + 6 + 2


def test_a_long_prompt_is_cut_inside_its_fields_keeping_header_and_instruction_start():
    # 6 header + 10 instruction + 30 input + 2 tail = 48 words; a limit of 20 leaves 12 for the fields:
    # each keeps at most 6 words (6 + 6 = 12).
    row = {"instruction": _words("i", 10), "input": _words("x", 30), "output": "a b"}
    ex, tok = _chat_example(row, 20)
    assert ex.prompt == f"{_words('i', 6)}\n\n{_words('x', 6)}"
    assert tok.decode(ex.prompt_ids) == f"{tok.HEADER} {_words('i', 6)} {_words('x', 6)} </user> <assistant>"
    assert (ex.prompt_cut, ex.prompt_tokens) == (True, 20)
    assert tok.decode(ex.target_ids[:-1]) == "a b" and ex.target_ids[-1] == 2


def test_a_short_field_is_kept_whole_while_a_long_one_is_cut():
    # 6 + 3 + 40 + 2 = 51 words, limit 24: 16 for the fields, the 3-word instruction whole, 13 input words.
    row = {"instruction": _words("i", 3), "input": _words("x", 40), "output": "a"}
    ex, tok = _chat_example(row, 24)
    assert ex.prompt == f"{_words('i', 3)}\n\n{_words('x', 13)}"
    assert (ex.prompt_cut, ex.prompt_tokens) == (True, 24)


def test_an_instruction_longer_than_the_limit_keeps_its_start():
    ex, tok = _chat_example({"instruction": _words("i", 50), "input": "", "output": "a"}, 20)
    assert ex.prompt == _words("i", 12)
    assert tok.decode(ex.prompt_ids).startswith(f"{tok.HEADER} i1 i2 ")
    assert (ex.prompt_cut, ex.prompt_tokens) == (True, 20)


def test_plain_prompts_keep_the_template_and_cut_inside_the_instruction():
    tok, task = WordTok(), discover_tasks().get("dolly")
    scaffold = len(task.prompt.split()) - 1  # the template's words but {instruction}
    limit = scaffold + 5
    cfg = DataConfig(max_length=limit + 20, max_prompt_length=limit)
    (ex,) = build_examples(task, [{"instruction": _words("w", 50), "input": "", "output": "a"}], tok, cfg)
    assert ex.prompt == task.prompt.format(instruction=_words("w", 5))
    assert (ex.prompt_cut, ex.prompt_tokens) == (True, limit)


def test_a_template_over_the_limit_alone_fails_naming_the_setting():
    with pytest.raises(UserError, match=r"prompt template alone is 8 tokens, over data.max_prompt_length=7"):
        _chat_example({"instruction": _words("i", 50), "input": "", "output": "a"}, 7)


def test_real_tokenizer_chat_prompts_keep_the_system_header(real_data):
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    task = discover_tasks().get("dolly")
    rows = load_rows(task, "eval", DataConfig(data_dir=str(real_data)))[:100]
    cfg = DataConfig(max_length=416, max_prompt_length=160, chat_template=True)
    examples = build_examples(task, rows, tok, cfg)
    # '<|im_start|>system ...<|im_end|>\n<|im_start|>user\n', then the content and 6 closing tokens
    empty = [{"role": "user", "content": ""}]
    header = tok.apply_chat_template(empty, add_generation_prompt=True, return_dict=True)["input_ids"][:-6]
    assert tok.decode(header).endswith("<|im_start|>user\n")
    assert 0 < sum(e.prompt_cut for e in examples) < 100
    for ex, row in zip(examples, rows, strict=True):
        assert ex.prompt_ids[: len(header)] == header and ex.prompt_tokens <= 160
        assert ex.prompt.startswith(row["instruction"][:20]) and "###" not in ex.prompt
        assert ex.prompt_cut == (ex.prompt != prompt_task(task, cfg).render(row))


def test_samples_record_the_prompt_length_and_whether_it_was_cut():
    model, tok, _ = load_teacher("tiny-random")
    tok.pad_token = tok.eos_token
    task = discover_tasks().get("dolly")
    rows = [
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        {"instruction": "Sum up.", "input": "word " * 200, "output": "words"},
    ]
    cfg = DataConfig(max_length=64, max_prompt_length=48, chat_template=True)
    examples = build_examples(task, rows, tok, cfg)
    res = evaluate(model, tok, examples, ("rougeL",), EvalConfig(max_new_tokens=2), "eval", True)
    shown = [(s["prompt_tokens"], s["prompt_cut"]) for s in res.samples]
    assert shown == [(len(examples[0].prompt_ids), False), (48, True)]
