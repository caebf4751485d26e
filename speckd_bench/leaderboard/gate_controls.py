"""Which groups of a leaderboard section run SpecKD's own gate and which run the control gates matched to
it: a random and a teacher-confidence gate at the same acceptance rate (method.gate_match), every other
setting the same. The findings (publish/claims.py) and the seed plan (power.py) compare the same pairs.
"""

from __future__ import annotations

import json

from speckd_bench.leaderboard.sections import Group, Section

CONTROLS = (("random", "a random gate"), ("confidence", "a teacher-confidence gate"))
"""method.gate of SpecKD's control runs, and how a sentence names them."""
CONTROL_KEYS = ("method.gate", "method.gate_match", "method.gate_rate")
"""Settings in which a control run differs from the SpecKD run it controls."""


def settings(group: Group) -> dict[str, object]:
    """The group's distinguishing settings, decoded."""
    return {k: json.loads(v) for k, v in group.settings.items()}


def gated_groups(section: Section, method: str) -> list[Group]:
    """The groups of `method` with its own gate (SpecKD's rule, not a control)."""
    return [g for g in section.groups if g.method == method and settings(g).get("method.gate") == "speckd"]


def control_groups(section: Section, gated: Group) -> dict[str, Group]:
    """gate -> the control group of a SpecKD group: its method, that gate matched to SpecKD's acceptance
    rate (gate_match), every other setting the same."""
    same = {k: v for k, v in settings(gated).items() if k not in CONTROL_KEYS}
    found = {}
    for g in section.groups:
        s = settings(g)
        rest = {k: v for k, v in s.items() if k not in CONTROL_KEYS}
        if g.method == gated.method and s.get("method.gate_match") and rest == same:
            found[str(s.get("method.gate"))] = g
    return found


def controls_by_group(section: Section, gated: list[Group]) -> dict[int, dict[str, Group]]:
    """id(SpecKD group) -> its control groups (control_groups), for each of `gated`."""
    return {id(g): control_groups(section, g) for g in gated}


def control_pairs(gated: list[Group], controls: dict[int, dict[str, Group]]) -> list[tuple[Group, Group]]:
    """(SpecKD group, control group) for each of `gated` and each control run for it, in CONTROLS order."""
    return [(g, controls[id(g)][gate]) for g in gated for gate, _ in CONTROLS if gate in controls[id(g)]]
