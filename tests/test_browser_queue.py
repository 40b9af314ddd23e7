"""Runs wait their turn, as a person sees it in a real browser: two runs started from the Train tab and one from a
shell train one after the other; the picker, the runs table and the progress say each queued run's place, and the
last run starts by itself once the one before it is done.

Drives Debian's Chromium through Playwright like tests/test_browser.py; a failure leaves a screenshot in
test-artifacts/, a pass saves test-artifacts/queue.png.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from test_browser import (ARTIFACTS, ROOT, browser_page, screenshot_on_failure,  # noqa: F401  (a fixture)
                          upload_and_open_train)
from test_ui_api import AppProcess, make_workspace

from ftchat import runs

# Every text the run picker shows, in order, so the test can read how the watched run's place moved.
RECORD_PICKER = """() => {
  window.__picker = [];
  const sample = () => {
    const value = document.querySelector('#run-picker input')?.value || '';
    if (value && window.__picker[window.__picker.length - 1] !== value) window.__picker.push(value);
  };
  new MutationObserver(sample).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                       attributes: true});
}"""


@pytest.fixture()
def app(tmp_path, tiny_model_dir):
    process = AppProcess(make_workspace(tmp_path, tiny_model_dir))
    yield process
    process.stop()


def start_in_the_browser(page, name: str, steps: int):
    page.get_by_label("Run name").fill(name)
    page.get_by_label("Max steps").fill(str(steps))
    page.locator("#start-training").click()
    page.wait_for_function(f"() => document.querySelector('#run-picker input')?.value.startsWith('{name} · ')")


def table_state(page, run: str) -> str:
    """The status cell of `run`'s row as the runs table shows it (Gradio 6 draws the table's cells outside its <tr>
    elements: read the rendered text, one cell a line)."""
    cells = [line.strip() for line in page.locator("#runs-table").inner_text().splitlines()]
    cells = [c for c in cells if c]
    return cells[cells.index(run) + 1] if run in cells else ""


@pytest.mark.slow
def test_two_runs_from_the_browser_and_one_from_a_shell_wait_their_turn(app, browser_page, chats_file):
    page = browser_page
    with screenshot_on_failure(page, "test_runs_wait_their_turn"):
        wait_their_turn(page, app, chats_file)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "queue.png"), full_page=True)


def wait_their_turn(page, app, chats_file):
    root, tiny = app.workspace / "runs", app.workspace / "models" / "tiny"
    upload_and_open_train(page, app, chats_file)
    page.get_by_label("Comparison prompts").fill("0")
    page.get_by_label("Eval every N steps").fill("10")  # left as it opened, the form sent 0 (refused)

    start_in_the_browser(page, "a", 900)  # still training when c joins, under load too
    page.locator("#run-progress").get_by_text("running").wait_for(timeout=120_000)
    start_in_the_browser(page, "b", 20)
    picker = page.locator("#run-picker input")
    assert picker.input_value().startswith("b · queued · 1st, starts after a"), picker.input_value()
    page.locator("#run-progress").get_by_text("queued · 1st, starts after a").wait_for()

    upload = next(p for p in (app.workspace / "uploads").iterdir() if p.name.endswith(".jsonl"))
    shell = subprocess.Popen(
        [sys.executable, "-m", "ftchat", "train", "--data", str(upload), "--out", str(root / "c"), "--base", str(tiny),
         "--adapter", "lora", "--max-steps", "4", "--compare-prompts", "0", "--replay", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        page.wait_for_timeout(500)
        for _ in range(60):  # until the shell's run has joined: a person presses Refresh runs
            page.get_by_role("button", name="Refresh runs").click()
            page.wait_for_timeout(1000)
            if table_state(page, "c").startswith("queued"):
                break
        assert table_state(page, "c").startswith("queued · 2nd, starts after b"), (
            table_state(page, "c"), shell.poll(), page.locator("#runs-table").inner_text()[-600:])
        assert table_state(page, "b").startswith("queued · 1st, starts after a")
        assert table_state(page, "a") == "running"

        page.evaluate(RECORD_PICKER)
        page.locator("#run-picker input").click()
        page.locator("#run-picker").get_by_role("option", name=re.compile(r"^c · queued · 2nd, starts after b")).click()
        page.locator("#run-progress").get_by_text("queued · 2nd, starts after b").wait_for()
        # a has done its part (it trained while the others joined): a person cancels it from a shell, and nobody
        # touches anything after that: b starts by itself, and c once b is done
        cancel = subprocess.run([sys.executable, "-m", "ftchat", "runs", "--root", str(root), "--cancel", "a"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert cancel.returncode == 0, cancel.stderr[-2000:]
        page.wait_for_function("() => document.querySelector('#run-progress .run-progress')?.dataset.state === 'done'",
                               timeout=480_000)
        assert shell.wait(timeout=60) == 0, shell.stderr.read()[-3000:]
    finally:
        if shell.poll() is None:
            shell.kill()
    shown = [text for text in page.evaluate("window.__picker") if text.startswith("c · ")]
    places = [re.sub(r" \(≈ [^)]*\)$", "", text) for text in shown]
    assert places[0] == "c · queued · 2nd, starts after b" and "c · queued · 1st, starts after b" in places, shown
    assert places.index("c · queued · 1st, starts after b") < places.index("c · running") < places.index("c · done")
    a, b, c = (runs.read_status(root / name) for name in "abc")
    assert [s["state"] for s in (a, b, c)] == ["cancelled", "done", "done"]
    assert b["started"] >= a["ended"] and c["started"] >= b["ended"], (a, b, c)
