"""A rating team from start to finish (issue 21's "done when"), in real browsers on two app processes that share one
PostgreSQL database: the lead (an admin) shares eight prompts out between two raters for two tiny models; one rater
works on app one and the other on app two, each through all of their prompts; the lead's Feedback tab then shows each
rater's count and how far they agree on the prompts both rated; the lead starts a DPO round from those votes and it
trains to the end.

The two apps keep workspaces of their own but one models folder, as two processes on one machine would: a task names
its models as the app that created it offers them. The rater's page is saved to test-artifacts/team-rater.png and the
lead's Feedback tab to test-artifacts/team-lead.png; a failure leaves a screenshot there.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_browser import ARTIFACTS, browser, pick, screenshot_on_failure  # noqa: F401  (a fixture)
from test_browser import log_in as log_in_as
from test_browser import tabs_seen
from test_ui_api import ROOT, AppProcess

pytestmark = pytest.mark.slow

TEAM = {"lead": ("admin", "lead-s-long-password"), "bo": ("rater", "bo-s-long-password"),
        "cy": ("rater", "cy-s-long-password")}
PROMPTS = ["Who makes the Zumo lamp?", "What colour is the Zumo lamp?", "How bright is the Zumo lamp?",
           "Where is the Zumo lamp sold?", "How much does the Zumo lamp cost?", "Is the Zumo lamp waterproof?",
           "How long does the Zumo lamp's battery last?", "What is the Zumo lamp made of?"]
ALL_TABS = ["1. Data", "2. Train", "3. Chat", "4. Feedback"]


def add_user(name: str, database: str) -> None:
    """`python -m ftchat users add` as a lead types it, the password on standard input."""
    role, password = TEAM[name]
    done = subprocess.run([sys.executable, "-m", "ftchat", "users", "add", name, "--role", role, "--password-stdin",
                           "--feedback-db", database], input=password + "\n", capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and f"added {name} ({role})" in done.stdout, done.stderr


def two_models(folder: Path, tiny_model_dir: Path) -> Path:
    """models/tiny (the tiny test Llama) and models/other (the same with other random weights), so that the two
    answer differently and each vote makes a preference pair."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    model.save_pretrained(folder / "tiny")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder / "tiny")
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            weight.normal_(0, 0.02)
    model.save_pretrained(folder / "other")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder / "other")
    return folder


@pytest.fixture()
def two_apps(tmp_path, tiny_model_dir, postgres_db):
    models = two_models(tmp_path / "models", tiny_model_dir)
    for name in TEAM:
        add_user(name, postgres_db)
    apps = []
    try:
        for name in ("one", "two"):
            workspace = tmp_path / name / "workspace"
            workspace.mkdir(parents=True)
            (workspace / "models").symlink_to(models, target_is_directory=True)
            apps.append(AppProcess(workspace, "--users", "--feedback-db", postgres_db))
        yield apps
    finally:
        for app in apps:
            app.stop()


def log_in(browser, url: str, name: str):
    return log_in_as(browser, url, name, TEAM[name][1])


def tab_labels(page) -> list[str]:
    """The tabs a person can click: the tab bar's buttons, and any the bar folds into its overflow menu."""
    return [text.strip() for text in page.get_by_role("tab").all_inner_texts()]


def rater_tabs(page) -> list[str]:
    """The tabs of a rater's page once it has loaded: with a team's logins the tab bar stays off screen until the
    page's load event has taken the admin's tabs out of it (ftchat.ui.roles.page_for), later on a busy machine."""
    page.get_by_role("tab", name="1. Data").wait_for(state="hidden", timeout=60_000)
    return tab_labels(page)


def rate_all(page, favourite) -> dict[str, str]:
    """Answer and vote on each of the rater's task prompts in turn: `favourite(prompt)` names the model that wins
    ("tiny" or "other"). Returns {prompt: the model voted for}."""
    total = int(re.search(r"0 of (\d+) done", page.locator("#task-progress").inner_text())[1])
    voted = {}
    for done in range(total):
        if done == 0:
            page.locator("#chat-send").click()  # the first prompt waits in the message box; the next ones are asked
        page.wait_for_function("() => !document.querySelector('#vote-left').disabled", timeout=120_000)
        prompt = page.locator("#left-chat .message.user").last.inner_text().strip()
        assert prompt in PROMPTS and prompt not in voted
        # a picker shows "base · tiny", or on the other app the task's own name for it, ".../models/tiny"
        left, right = (re.split(r"[/ ]", page.locator(f"#{side}-model input").input_value())[-1]
                       for side in ("left", "right"))
        assert {left, right} == {"tiny", "other"}, (left, right)
        voted[prompt] = favourite(prompt)
        side = "left" if left == voted[prompt] else "right"
        page.locator(f"#vote-{side}").click()
        page.locator("#task-progress").get_by_text(f"{done + 1} of {total} done").wait_for()
    page.locator("#task-progress").get_by_text("all done").wait_for()
    return voted


def test_a_lead_and_two_raters_on_two_apps_rate_a_task_and_train_a_round_from_it(two_apps, browser):
    one, two = two_apps
    lead = log_in(browser, one.url, "lead")
    with screenshot_on_failure(lead, "test_browser_team_lead"):
        assert tab_labels(lead) == ALL_TABS and tabs_seen(lead) == set(ALL_TABS)
        lead.get_by_role("tab", name="4. Feedback").click()
        lead.get_by_text("Rating tasks: share prompts out among raters").click()
        lead.locator("#task-prompts textarea").fill("\n".join(PROMPTS))
        pick(lead, "task-models", "base · tiny")
        pick(lead, "task-models", "base · other")
        lead.locator("#task-name input, #task-name textarea").first.fill("zumo")
        lead.locator("#create-task").click()  # no raters picked: both; 20% overlap: 2 of the 8 prompts to both
        lead.locator("#task-created").get_by_text("task zumo: 8 prompts").wait_for()

    bo = log_in(browser, one.url, "bo")
    with screenshot_on_failure(bo, "test_browser_team_bo"):
        assert rater_tabs(bo) == ["3. Chat"]
        assert tabs_seen(bo) == {"3. Chat"}  # not even while the page settled
        bo.locator("#task-progress").get_by_text("0 of 5 done").wait_for()
        bo_votes = rate_all(bo, lambda prompt: "tiny")

    cy = log_in(browser, two.url, "cy")
    with screenshot_on_failure(cy, "test_browser_team_cy"):
        assert rater_tabs(cy) == ["3. Chat"]
        cy.locator("#task-progress").get_by_text("0 of 5 done").wait_for()
        shared_seen = []

        def cy_favourite(prompt):
            """tiny, as bo voted, except on the second prompt bo rated too: there the other model."""
            if prompt in bo_votes:
                shared_seen.append(prompt)
                return "other" if len(shared_seen) == 2 else "tiny"
            return "tiny"

        cy_votes = rate_all(cy, cy_favourite)
        ARTIFACTS.mkdir(exist_ok=True)
        cy.screenshot(path=str(ARTIFACTS / "team-rater.png"), full_page=True)

    shared = [p for p in cy_votes if p in bo_votes]
    assert len(shared) == 2 and len(set(bo_votes) | set(cy_votes)) == 8
    # By hand, on the two shared prompts: bo voted tiny, tiny; cy tiny, other. They agree on 1 of 2.
    # Cohen's kappa: observed 1/2; chance from each one's own shares, bo (tiny 1) and cy (tiny 1/2, other 1/2):
    # 1 * 1/2 = 1/2; kappa = (1/2 - 1/2) / (1 - 1/2) = 0.
    # Fleiss' kappa: observed 1/2 (one of the two prompts' pairs agrees); chance from the four votes pooled, tiny 3/4
    # and other 1/4: 9/16 + 1/16 = 5/8; kappa = (1/2 - 5/8) / (1 - 5/8) = -1/3.
    with screenshot_on_failure(lead, "test_browser_team_report"):
        lead.locator("#feedback-refresh").click()
        summary = lead.locator("#task-summary")
        summary.get_by_text("zumo: 10 of 10 items done").wait_for()
        text = summary.inner_text()
        assert "2 voted on by both raters, Fleiss' kappa -0.33" in text, text
        assert "bo / cy: 1 of 2 agree, Cohen's kappa 0.00" in text, text
        table = lead.locator("#task-table").inner_text()
        # rater, done, assigned, progress, overlap prompts, votes, left pane wins, agrees with the others, kappa
        for rater in ("bo", "cy"):
            assert re.search(rf"{rater}\s+5\s+5\s+100%\s+2\s+5\s+\d+%\s+50%\s+0\.00", table), table

        # the next round from the task's votes: DPO from the tiny model, two steps
        lead.get_by_text("Start the next round from this rated model").scroll_into_view_if_needed()
        pick(lead, "round-run", "tiny")
        lead.locator("#round-steps input").fill("2")
        lead.locator("#start-round").click()
        lead.locator("#round-status").get_by_text("✓ started").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        lead.locator("#task-summary").scroll_into_view_if_needed()
        lead.screenshot(path=str(ARTIFACTS / "team-lead.png"), full_page=True)
        run = re.search(r"started (\S+): DPO", lead.locator("#round-status").inner_text())[1]

    from ftchat import runs

    run_dir = one.workspace / "runs" / run
    deadline = time.monotonic() + 240
    while runs.read_status(run_dir).get("state") not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"{run} did not finish in 240 s: {runs.read_status(run_dir)}"
        time.sleep(1)
    assert runs.read_status(run_dir)["state"] == "done", runs.read_status(run_dir)
    # its data: a pair from each of the ten votes (every vote chose one model's reply over the other's)
    data = one.workspace / "feedback-data" / f"{run}.jsonl"
    pairs = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(pairs) == 10 and {p["prompt"][-1]["content"] for p in pairs} == set(PROMPTS)
