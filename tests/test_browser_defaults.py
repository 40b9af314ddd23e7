"""Start pressed on the Train tab as it opens: a person who uploads a file, picks a base, changes one setting under
"Advanced" and presses Start gets the planned run (the planned fields are empty, and empty means "planned", never 0).

Drives Debian's Chromium through Playwright like tests/test_browser.py."""
from __future__ import annotations

import pytest
from test_browser import ARTIFACTS, browser_page, screenshot_on_failure, upload_and_open_train  # noqa: F401  (a fixture)
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
        upload_and_open_train(page, app, chats_file)  # Advanced opened to change one setting: the rest stay planned
        shown_dropout = page.get_by_label("LoRA dropout").input_value()
        page.locator("#start-training").click()
        page.wait_for_function(
            "() => ['done', 'failed', 'cancelled'].includes("
            "document.querySelector('#run-progress .run-progress')?.dataset.state)", timeout=300_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "train-defaults.png"), full_page=True)
        state = page.locator("#run-progress .run-progress").get_attribute("data-state")
        assert state == "done", page.locator("#run-log").inner_text()[-2000:]
        shown = page.locator("#run-progress").inner_text()
    [run_dir] = [p for p in (app.workspace / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    status = runs.read_status(run_dir)
    plan = status["plan"]
    # every planned field was planned: steps from the data, an eval every few steps (never 0)
    assert status["summary"]["steps"] == plan["steps"] >= 60 and plan["eval_steps"] >= 5, plan
    assert set(plan["chosen"]) >= {"steps", "eval_split", "eval_steps", "early_stopping"}, plan["chosen"]
    assert f"step {plan['steps']} / {plan['steps']}" in shown, shown  # what the page said when it finished
    # the form shows the default dropout (0: its masks cost a CPU step 13-17%), and the run trained with what it showed
    assert float(shown_dropout) == 0.0 == runs.load_run(run_dir).config["lora_dropout"], shown_dropout
