"""The pilot's table in docs/protocol.md is what the committed pilot records say."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PILOT = ROOT / "results" / "pilot" / "runs"


def pilot_rows() -> list[str]:
    """The table's rows from the pilot's curves: per step, tf_tvd and tf_fkl of fkl and speckd, and gaps."""
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


def test_the_pilot_table_is_the_pilot_records():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    table = re.search(r"<!-- pilot-curve:.*?-->\n(.*?)\n  <!-- /pilot-curve -->", doc, re.S)
    assert table, "docs/protocol.md has no pilot-curve block"
    assert table.group(1).splitlines()[2:] == pilot_rows()
