"""results/NOTES.md is context only: every number and difference in results/README.md is generated from
the records, and the committed README's findings are what the generator writes from them now."""

import re
from pathlib import Path

import pytest

from speckd_bench.leaderboard.selection import select_sections
from speckd_bench.publish.claims import findings
from speckd_bench.sweep.status import done_run_ids

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

CLAIM = re.compile(
    r"\d|%|\bsignificant\w*|\bthan\b|\b(?:better|worse|higher|lower|beats?|outperforms?|improves?|gains?|"
    r"hurts?|helps|leads?|ahead|behind|exceeds?|above|below|more|less|fewer)\b",
    re.IGNORECASE,
)
"""What states a numeric or comparative claim: a digit, a percentage, 'significant', a comparative."""


def claims_in(markdown: str) -> list[str]:
    """The claim words of markdown prose, outside code spans and link targets (names and paths)."""
    prose = re.sub(r"`[^`]*`|\]\([^)]*\)", " ", markdown)
    return CLAIM.findall(prose)


def test_the_claim_check_catches_numbers_and_comparatives():
    assert claims_in("rkl is 1.95 points better than fkl") == ["1", "9", "5", "better", "than"]
    assert claims_in("srkl's gain is not significant") == ["gain", "significant"]
    assert claims_in("the `SmolLM2-135M` teacher ([docs](../docs/p2.md))") == []


def test_the_notes_state_no_number_or_difference():
    assert claims_in((RESULTS / "NOTES.md").read_text(encoding="utf-8")) == []


def _makefile_metrics() -> list[str]:
    line = next(
        x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("LEADERBOARD_METRICS")
    )
    return line.split("?=")[1].split()


@pytest.mark.slow
def test_the_committed_readme_holds_the_findings_its_records_give_now():
    # the reference experiment's grid, complete (the Makefile's leaderboard-report)
    run_ids, not_done = done_run_ids(ROOT / "sweeps" / "reference.yaml", RESULTS)
    assert not not_done, f"the reference grid lacks runs: {not_done}"
    sections = select_sections(RESULTS, baseline="fkl", metrics=_makefile_metrics(), run_ids=run_ids)
    generated = "\n".join(findings(sections, "speckd"))
    assert generated in (RESULTS / "README.md").read_text(encoding="utf-8")
