"""The Export panel on the Train tab: a person exports a finished run as GGUF and reads, on the page, how the written
file answers in llama.cpp beside the model they tested (ftchat.export.check). Drives Debian's Chromium through
Playwright like tests/test_browser.py."""
from __future__ import annotations

import re

import pytest
import yaml
from test_browser import ARTIFACTS, browser_page, screenshot_on_failure  # noqa: F401  (a fixture)
from test_ui_api import AppProcess, make_workspace
from trained_runs import copy_run

from ftchat.export.check import llamacpp_missing


@pytest.mark.slow
def test_a_gguf_export_says_on_the_page_how_llamacpp_answers(tmp_path, tiny_model_dir, sft_run, browser_page):
    if llamacpp_missing() is not None:
        pytest.skip(f"llama.cpp is not installed here: {llamacpp_missing()}")
    workspace = make_workspace(tmp_path, tiny_model_dir)
    run_dir = copy_run(sft_run, workspace / "runs" / "zumo")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["base"] = str(workspace / "models" / "tiny")  # the workspace's own copy of the base: an offered model
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    app = AppProcess(workspace)
    page = browser_page
    try:
        with screenshot_on_failure(page, "test_a_gguf_export_says_on_the_page"):
            page.goto(app.url)
            page.get_by_role("tab", name="2. Train").click()
            page.get_by_text("Export a run").click()
            page.get_by_label("GGUF file (llama.cpp)").check()
            page.get_by_role("button", name="Export", exact=True).click()
            page.get_by_text("llama.cpp check").wait_for(timeout=120_000)
            shown = page.get_by_text("llama.cpp check").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "export.png"), full_page=True)
    finally:
        app.stop()
    figures = re.search(r"(\d+)% token agreement with the in-app model \((\d+) of (\d+) greedy tokens\), (\d+) of (\d+) "
                        r"answers identical", shown)
    assert figures, shown
    percent, agreeing, tokens, identical, answers = map(int, figures.groups())
    assert tokens > 0 and answers >= 1 and percent == round(100 * agreeing / tokens)
    # the f16 file the panel writes by default: measured 100%
    assert percent >= 95 and "Warning" not in shown, shown
    assert len(list((workspace / "exports").rglob("*.gguf"))) == 1
