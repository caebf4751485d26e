"""Answer extraction for gsm8k: the final number after '####' in references, the last number in outputs."""

from speckd_bench.api.metrics import last_number, number_after


def extract_prediction(output: str) -> str:
    return last_number(output)


def extract_reference(answer: str) -> str:
    return number_after(answer, "####")
