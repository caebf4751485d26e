"""`report --html`: one self-contained page, checked as HTML and in a real headless chromium (sorting by
a header click or key, best first, no console errors, a non-blank screenshot, column-group toggles, no
sideways overflow at 1400 px and a method column that stays in view when a wide table scrolls), and the
lm-eval scores on it."""

import json
import re
import shutil
from pathlib import Path

import pytest
from synthetic_records import write_run
from typer.testing import CliRunner

from speckd_bench.cli.app import app
from speckd_bench.leaderboard.selection import select_sections

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the networking flags chromium stalls on the closed network of CI machines.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
METRIC = "tf_top1 (mean ± std)"
LOWER_IS_BETTER = "tf_fkl ↓ (mean ± std)"


@pytest.fixture(scope="module")
def page_file(tmp_path_factory, first_leaderboard) -> Path:
    """The committed reference leaderboard, rendered as `make leaderboard-report` does."""
    out = tmp_path_factory.mktemp("page") / "leaderboard.html"
    args = ["report", "--results-dir", str(first_leaderboard), "--baseline", "fkl", "--method", "speckd"]
    args += [
        "--command",
        "make leaderboard",
        "--metric",
        "tf_top1",
        "--metric",
        "rougeL",
        "--metric",
        "tf_fkl",
    ]
    args += ["--html", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return out


def test_page_is_self_contained_with_every_group_and_the_protocol(page_file, first_leaderboard):
    text = page_file.read_text()
    sections = select_sections(first_leaderboard, baseline="fkl", metrics=["tf_top1", "rougeL"])
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched from elsewhere
    assert text.count("data:image/png;base64,") >= 3
    for section in sections:
        assert section.description in text.replace("&#x27;", "'")
    groups = text.split('<tbody class="groups">')[1].split("</tbody>")[0]
    assert groups.count("<tr>") == len(sections[0].groups) == 7
    assert "<em>teacher</em>" not in text and re.search(r'<td class="col-core">teacher</td>', text)
    for group in ("fidelity", "text", "intervals", "degeneracy", "stability", "timing"):  # a checkbox each
        assert (
            f'<input type="checkbox" value="{group}">' in text
            and f'<th scope="col" class="col-{group}" tabindex="0"' in text
        )
    assert 'value="lm-eval"' not in text  # no run recorded lm-eval scores
    heads = {h: f for f, h in re.findall(r'<th [^>]*data-first="(\w+)">([^<]+)</th>', text)}
    assert heads[METRIC] == "descending" and heads[LOWER_IS_BETTER] == "ascending"  # best first
    assert heads["method"] == "ascending" and heads["wall min"] == "ascending"
    assert heads["train tok/s"] == "descending"
    assert text.count('tabindex="0" aria-sort="none"') == text.count("<th ")  # every header focusable


def test_page_shows_the_lm_eval_scores(tmp_path):
    """fkl over two seeds with lm-eval scores, sft without: an lm-eval column group on the page."""
    for method in ("fkl", "sft"):
        for seed in (1, 2):
            record = write_run(
                tmp_path, method=method, seed=seed, scores={10: [10.0 + seed]}, losses=[1.0] * 4
            )
            if method == "fkl":
                score = {"alias": "arc_easy", "acc,none": 0.4 + 0.1 * seed, "acc_stderr,none": 0.01}
                record["lm_eval"] = {"tasks": ["arc_easy"], "results": {"arc_easy": score}}
                (tmp_path / "runs" / record["run_id"] / "record.json").write_text(json.dumps(record))
    out = tmp_path / "page.html"
    res = CliRunner().invoke(
        app, ["report", "--results-dir", str(tmp_path), "--method", "sft", "--html", str(out)]
    )
    assert res.exit_code == 0, (res.output, res.exception)
    text = out.read_text()
    assert '<input type="checkbox" value="lm-eval">' in text
    assert re.search(
        r'<th scope="col" class="col-lm-eval"[^>]*>lm-eval arc_easy acc \(mean ± std\)</th>', text
    )
    rows = text.split('<tbody class="groups">')[1].split("</tbody>")[0].split("<tr>")[1:]
    fkl = next(r for r in rows if r.startswith('<td class="col-core">fkl</td>'))
    sft = next(r for r in rows if r.startswith('<td class="col-core">sft</td>'))
    assert '<td class="col-lm-eval">0.55 ± 0.07</td>' in fkl and '<td class="col-lm-eval">-</td>' in sft
    assert "lm-evaluation-harness score of the trained student" in text  # its legend


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)")
def test_page_in_headless_chromium_sorts_and_renders(page_file, tmp_path):
    from matplotlib.image import imread
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_file.as_uri())
        table = page.locator("table.leaderboard").first
        assert table.locator("tbody.groups tr").count() == 7
        column = [h.strip() for h in table.locator("thead th").all_inner_texts()].index(METRIC)

        def values(col: int) -> list[float]:
            cells = table.locator(f"tbody.groups tr td:nth-child({col + 1})").all_inner_texts()
            return [float(c.split()[0]) for c in cells]

        head = table.locator("thead th").nth(column)
        head.click()  # higher is better: best (highest) first
        assert values(column) == sorted(values(column), reverse=True)
        head.click()
        assert values(column) == sorted(values(column))
        page.locator('.groups-toggle input[value="fidelity"]').check()
        lower = [h.strip() for h in table.locator("thead th").all_inner_texts()].index(LOWER_IS_BETTER)
        table.locator("thead th").nth(lower).click()  # lower is better: best (lowest) first
        assert values(lower) == sorted(values(lower)) and len(set(values(lower))) > 1
        assert table.locator("thead th").nth(lower).get_attribute("aria-sort") == "ascending"
        assert head.get_attribute("aria-sort") == "none"
        head.focus()  # a header takes the keyboard focus; Enter sorts by it, Space reverses
        assert page.evaluate("document.activeElement.textContent") == head.inner_text()
        page.keyboard.press("Enter")
        assert head.get_attribute("aria-sort") == "descending"
        assert values(column) == sorted(values(column), reverse=True)
        page.keyboard.press(" ")
        assert head.get_attribute("aria-sort") == "ascending" and values(column) == sorted(values(column))
        assert table.locator("tbody.reference tr").first.inner_text().startswith("teacher")
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot))
        browser.close()
    assert errors == []
    pixels = imread(shot)
    assert pixels.shape[:2] == (900, 1400)
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97]}) > 10  # not one colour


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)")
def test_page_at_1400px_fits_and_keeps_the_method_column_in_view(page_file):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(page_file.as_uri())
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert page.evaluate(overflow) <= 0  # the default view (core columns) needs no sideways scroll
        table = page.locator("table.leaderboard").first
        text = table.locator("thead th.col-text").first  # rougeL
        assert not text.is_visible()
        for box in page.locator(".groups-toggle input").all():
            box.check()
        assert text.is_visible()
        scroller = page.locator(".scroll").first
        wide = scroller.evaluate("e => e.scrollWidth - e.clientWidth")
        assert wide > 200  # every group shown: the table scrolls inside its box, not the page
        assert page.evaluate(overflow) <= 0
        method = table.locator("tbody.groups tr td").first
        before = method.bounding_box()
        scroller.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
        assert scroller.evaluate("e => e.scrollLeft") >= wide - 1
        after, box = method.bounding_box(), scroller.bounding_box()
        assert after["x"] == pytest.approx(before["x"], abs=1) and after["x"] >= box["x"]
        hit = page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('td') === "
            "document.querySelector('table.leaderboard tbody.groups td')",
            [after["x"] + after["width"] / 2, after["y"] + after["height"] / 2],
        )
        assert hit  # the method cell is on top, not hidden under the scrolled cells
        browser.close()
