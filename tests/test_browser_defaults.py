"""Start pressed on the Train tab as it opens: a person who uploads a file, picks a base, changes one setting under
"Advanced" and presses Start gets the planned run (the planned fields are empty, and empty means "planned", never 0).

Drives Debian's Chromium through Playwright like tests/test_browser.py."""
from __future__ import annotations

import pytest
from test_browser import ARTIFACTS, browser_page, pick, screenshot_on_failure  # noqa: F401  (a fixture)
from test_ui_api import AppProcess, make_workspace

from ftchat import runs


@pytest.fixture()
def app(tmp_path, tiny_model_dir):
    process = AppProcess(make_workspace(tmp_path, tiny_model_dir))
    yield process
    process.stop()


@pytest.mark.slow
def test_start_with_the_form_as_it_opens_trains_the_planned_run(app, browser_page, chats_file):
    page = browser_page
    with screenshot_on_failure(page, "test_start_with_the_form_as_it_opens"):
        page.goto(app.url)
        page.locator("input[type=file]").set_input_files(str(chats_file))
        page.locator("#data-report").get_by_text("usable examples").wait_for(timeout=60_000)
        page.get_by_role("tab", name="2. Train").click()
        page.locator("#train-data").get_by_text("chats.jsonl ·").wait_for()
        pick(page, "base-model", "workspace: models/tiny")
        page.get_by_label("LoRA", exact=True).check()
        page.get_by_text("Advanced").click()  # opened to change one setting: the planned ones stay planned
        page.get_by_label("Replay ratio").fill("0")
        page.locator("#start-training").click()
        page.wait_for_function(
            "() => ['done', 'failed', 'cancelled'].includes("
            "document.querySelector('#run-progress .run-progress')?.dataset.state)", timeout=300_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "train-defaults.png"), full_page=True)
        state = page.locator("#run-progress .run-progress").get_attribute("data-state")
        assert state == "done", page.locator("#run-log").inner_text()[-2000:]
    [run_dir] = [p for p in (app.workspace / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    status = runs.read_status(run_dir)
    plan = status["plan"]
    # every planned field was planned: steps from the data, an eval every few steps (never 0)
    assert status["summary"]["steps"] == plan["steps"] >= 60 and plan["eval_steps"] >= 5, plan
    assert set(plan["chosen"]) >= {"steps", "eval_split", "eval_steps", "early_stopping"}, plan["chosen"]
