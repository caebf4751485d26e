"""The metadata of an exported model's card (huggingface_hub's ModelCardData): the model the student was
made from, its license and language, the task's datasets, tags and a model-index of the run's scores (its
eval sets and lm-eval's), found offline: from the record, the task files, local model cards and the hub
cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf import GGUFReader
from huggingface_hub import EvalResult, ModelCard, ModelCardData, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id

from speckd_bench.data.tasks import TASKS, TaskSpec
from speckd_bench.evaluation.lmeval import lm_eval_metrics
from speckd_bench.models.loading import SMOLLM2, gguf_path
from speckd_bench.records.run_record import RunRecord

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub model the built-in teacher's GGUF file was made from."""
LM_EVAL = ("lm-evaluation-harness", "https://github.com/EleutherAI/lm-evaluation-harness")
"""The model-index source of lm-eval's scores (the harness's own scores carry none)."""


def hub_id(name: str) -> str | None:
    """A model name as a hub id: the built-in teacher's source, a name that is a valid repo id and no
    local folder, else None (a local folder or the random test model)."""
    if name == SMOLLM2:
        return SMOLLM2_HUB_ID
    if "/" not in name or Path(name).expanduser().exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def source_model(models: dict[str, str]) -> str:
    """The model the student's weights came from: the teacher it was cut from, or its pretrained id."""
    student = models["student"]
    return models["teacher"] if student.startswith("layers:") else student


def _local_card(name: str) -> ModelCardData | None:
    """The card metadata of a local model folder or of a hub model in the hub cache, if any."""
    card = Path(name).expanduser() / "README.md"
    if not card.is_file() and hub_id(name):
        cached = try_to_load_from_cache(name, "README.md")
        card = Path(cached) if isinstance(cached, str) else card
    if not card.is_file():
        return None
    try:
        return ModelCard.load(card, ignore_metadata_errors=True).data
    except (OSError, ValueError):
        return None


def _gguf_field(key: str) -> Any:
    field = GGUFReader(gguf_path()).fields.get(key)
    return field.contents() if field is not None else None


def model_license(name: str) -> str | None:
    """The license of a model, where this machine knows it: the built-in teacher's GGUF metadata, the
    card of a local model folder or of a hub model in the hub cache; None otherwise."""
    if name == SMOLLM2:
        value = _gguf_field("general.license")
        return str(value) if value is not None else None
    data = _local_card(name)
    return data.license if data else None


def model_languages(name: str) -> list[str]:
    """The languages a model declares (found as its license is), e.g. ['en']; none when unknown."""
    value = (
        _gguf_field("general.languages") if name == SMOLLM2 else getattr(_local_card(name), "language", None)
    )
    return [str(v) for v in ([value] if isinstance(value, str) else value or [])]


def languages(record: RunRecord) -> list[str]:
    """The card's `language`: what the teacher (or the student's source model) declares; else English
    when every task of the run is a built-in one (their prompts and references are English)."""
    for name in (record.models["teacher"], source_model(record.models)):
        if declared := model_languages(name):
            return declared
    tasks = [_task(name) for name in (record.task, *record.metrics)]
    return ["en"] if all(task is not None and task.plugin_dir is None for task in tasks) else []


def _task(name: str) -> TaskSpec | None:
    return TASKS.get(name) if name in TASKS else None


def _dataset_id(task: TaskSpec, split: str) -> str | None:
    """The hub dataset (or dataset repo) of a task's split, as its task file names it."""
    hub = task.splits[split].hub if split in task.splits else None
    return (hub.dataset or hub.repo) if hub is not None else None


def datasets(record: RunRecord) -> list[str]:
    """The hub datasets of the run's training split and eval sets, as their task files name them."""
    found = []
    for name, split in [(record.task, "train"), *((n, "eval") for n in record.metrics)]:
        task = _task(name)
        dataset = _dataset_id(task, split) if task else None
        if dataset and dataset not in found:
            found.append(dataset)
    return found


def eval_results(record: RunRecord) -> list[EvalResult]:
    """The model-index: per eval set the trained student's task metrics, the main one first (not the
    fidelity metrics, which compare it with its teacher); then lm-eval's scores (metric and filter)."""
    results = []
    for name, per_set in record.metrics.items():
        task = _task(name)
        scores = per_set.get("after", {}).get("metrics", {})
        hub = task.splits["eval"].hub if task else None
        for metric in task.metrics if task else [record.main_metric]:
            if metric not in scores:
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=(_dataset_id(task, "eval") if task else None) or name,
                    dataset_name=name,
                    dataset_split=hub.split if hub else None,
                    metric_type=metric,
                    metric_value=scores[metric],
                )
            )
    for task_name, metric, filter_name, value in lm_eval_metrics(record.lm_eval):
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=task_name,
                dataset_name=f"lm-eval {task_name}",
                metric_type=metric,
                metric_name=metric if filter_name == "none" else f"{metric} ({filter_name})",
                metric_value=value,
                source_name=LM_EVAL[0],
                source_url=LM_EVAL[1],
            )
        )
    return results


def card_data(record: RunRecord) -> ModelCardData:
    """The card's YAML header for a run's exported student."""
    source = source_model(record.models)
    return ModelCardData(
        model_name=record.run_id,
        base_model=hub_id(source),
        datasets=datasets(record) or None,
        license=model_license(source),
        language=languages(record) or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["speckd-bench", "knowledge-distillation", record.method],
        eval_results=eval_results(record) or None,
    )
