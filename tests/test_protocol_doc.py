"""The tables of docs/protocol.md that come from committed records are what those records say: the
pilot's learning curves and the student recipes' warm starts."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PILOT = ROOT / "results" / "pilot" / "runs"
RECIPES = ROOT / "results" / "student-recipes" / "runs"


def pilot_rows() -> list[str]:
    """Per curve step, tf_tvd and tf_fkl of fkl and speckd, and their gaps."""
    curves = {}
    for run in PILOT.iterdir():
        method = json.loads((run / "record.json").read_text())["method"]
        points = map(json.loads, (run / "curve.jsonl").read_text().splitlines())
        curves[method] = {p["step"]: p for p in points}
    rows = []
    for step in sorted(curves["fkl"]):
        a, b = curves["fkl"][step], curves["speckd"][step]
        tvd = f"{a['tf_tvd']:.4f} | {b['tf_tvd']:.4f} | {b['tf_tvd'] - a['tf_tvd']:+.4f}"
        fkl = f"{a['tf_fkl']:.3f} | {b['tf_fkl']:.3f} | {b['tf_fkl'] - a['tf_fkl']:+.3f}"
        rows.append(f"  | {step} | {tvd} | {fkl} |")
    return rows


def recipe_rows(recipes: list[tuple[str, str]]) -> list[str]:
    """Per (student, warm start) the init student's figures from its complete record, else 'not run yet'."""
    done = {}
    for path in RECIPES.glob("*/record.json"):
        record = json.loads(path.read_text())
        cfg = record["config"]
        recipe = (
            cfg["model"]["student"],
            f"{cfg['train']['init_rows']} rows x {cfg['train']['init_sft_epochs']}",
        )
        done[recipe] = record
    rows = []
    for student, warm in recipes:
        record = done.get((student, warm))
        if record is None:
            rows.append(f"| {student} | {warm} | not run yet | | | | | | |")
            continue
        init = record["metrics"]["dolly"]["before"]["init"]
        d, m = init["degeneracy"], init["metrics"]
        figures = (
            f"{100 * d['empty']:.0f} | {d['distinct_2']:.2f} | {d['repetition']:.2f} | {m['rougeL']:.2f}"
        )
        seconds = f"{record['init']['seconds_when_built']:.0f} | {record['timings']['wall_s']:.0f}"
        rows.append(f"| {student} | {warm} | {figures} | {m['tf_tvd']:.4f} | {seconds} |")
    return rows


def _block(name: str) -> list[str]:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    table = re.search(rf"<!-- {name}:.*?-->\n(.*?)\n *<!-- /{name} -->", doc, re.S)
    assert table, f"docs/protocol.md has no {name} block"
    return table.group(1).splitlines()[2:]


def test_the_pilot_table_is_the_pilot_records():
    assert _block("pilot-curve") == pilot_rows()


def test_the_student_recipe_table_is_the_recipe_records():
    lines = _block("student-recipes")
    recipes = [tuple(cell.strip() for cell in line.strip("|").split("|")[:2]) for line in lines]
    assert lines == recipe_rows(recipes)
    assert sum("not run yet" not in line for line in lines) == len(list(RECIPES.glob("*/record.json")))
