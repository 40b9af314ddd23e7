"""A rating task in a real browser, one Chromium session per person: the admin shares four prompts out between two
raters in the Feedback tab; each rater logs in and finds their first prompt waiting with "0 of N done"; a vote on
it shows "1 of N done" and brings the next prompt.

Drives Debian's Chromium through Playwright like tests/test_browser.py; the rater's page is saved to
test-artifacts/task-rater.png, and a failure leaves a screenshot there.
"""
from __future__ import annotations

import re

import pytest
from test_browser import ARTIFACTS, browser, pick, screenshot_on_failure, tabs_seen  # noqa: F401  (a fixture)
from test_browser import log_in as log_in_as
from test_feedback_ui import two_bases
from test_ui_api import AppProcess

pytestmark = pytest.mark.slow

TEAM = {"ana": ("admin", "ana-s-long-password"), "bo": ("rater", "bo-s-long-password"),
        "cy": ("rater", "cy-s-long-password")}
PROMPTS = ["Who makes the Zumo lamp?", "What colour is the Zumo lamp?", "How bright is the Zumo lamp?",
           "Where is the Zumo lamp sold?"]


@pytest.fixture()
def team_app(tmp_path, tiny_model_dir):
    from ftchat.users import Users

    workspace, _, _ = two_bases(tmp_path, tiny_model_dir)
    users = Users(workspace / "users.json")
    for name, (role, password) in TEAM.items():
        users.add(name, role, password)
    process = AppProcess(workspace, "--users", str(workspace / "users.json"))
    yield process
    process.stop()


def log_in(browser, url: str, name: str):
    return log_in_as(browser, url, name, TEAM[name][1])


def task_progress(page) -> str:
    return page.locator("#task-progress").inner_text().strip()


def test_an_admin_shares_prompts_out_and_each_rater_works_through_theirs(team_app, browser):
    admin = log_in(browser, team_app.url, "ana")
    with screenshot_on_failure(admin, "test_browser_tasks_admin"):
        admin.get_by_role("tab", name="3. Chat").click()  # no task names the admin: no task button
        admin.locator("#chat-send").wait_for()
        admin.wait_for_function("() => !document.querySelector('.pending')")
        assert not admin.locator("#task-next").is_visible()
        admin.get_by_role("tab", name="4. Feedback").click()
        admin.get_by_text("Rating tasks: share prompts out among raters").click()
        admin.locator("#task-prompts textarea").fill("\n".join(PROMPTS))
        pick(admin, "task-models", "base · models/tiny")
        pick(admin, "task-models", "base · models/second")
        admin.locator("#task-name input, #task-name textarea").first.fill("zumo-lamp")
        admin.locator("#create-task").click()  # no raters picked: every rater; overlap 20%: one prompt to both
        admin.locator("#task-created").get_by_text("task zumo-lamp: 4 prompts for bo").wait_for()

    totals = {}
    for name in ("bo", "cy"):
        page = log_in(browser, team_app.url, name)
        with screenshot_on_failure(page, f"test_browser_tasks_{name}"):
            page.locator("#task-progress").get_by_text(re.compile(r"0 of \d+ done")).wait_for()
            totals[name] = int(re.search(r"0 of (\d+) done", task_progress(page))[1])
            assert page.locator("#chat-message textarea").input_value() in PROMPTS
            assert page.locator("#task-next").is_visible()
            # the task's two models in the pickers, once the page has settled
            page.wait_for_function("() => !document.querySelector('.pending')")
            models = {page.locator(f"#{side}-model input").input_value() for side in ("left", "right")}
            assert models == {"base · models/tiny", "base · models/second"}
            if name == "bo":
                bo = page
    assert sorted(totals.values()) == [2, 3]  # 4 prompts and the shared one: 5 items, shared out evenly

    with screenshot_on_failure(bo, "test_browser_tasks_vote"):
        first = bo.locator("#chat-message textarea").input_value()
        bo.locator("#chat-send").click()
        bo.wait_for_function("() => !document.querySelector('#vote-left').disabled", timeout=120_000)
        bo.locator("#vote-left").click()
        bo.locator("#task-progress").get_by_text(f"1 of {totals['bo']} done").wait_for()
        # the next prompt is asked of both models at once
        bo.wait_for_function("first => { const asked = [...document.querySelectorAll('#left-chat .message.user')]"
                             ".map(m => m.innerText.trim()); return asked.length && asked[asked.length - 1] !== first; }",
                             arg=first)
        asked = bo.locator("#left-chat .message.user").last.inner_text().strip()
        assert asked in PROMPTS and asked != first
        ARTIFACTS.mkdir(exist_ok=True)
        bo.screenshot(path=str(ARTIFACTS / "task-rater.png"), full_page=True)

    with screenshot_on_failure(admin, "test_browser_tasks_report"):
        admin.locator("#feedback-refresh").click()
        admin.locator("#task-summary").get_by_text("zumo-lamp: 1 of 5 items done").wait_for()


def test_a_rater_never_sees_the_admin_tabs_even_when_the_page_loads_slowly(team_app, browser):
    """The style that keeps the tab bar off screen until the page knows who is looking must be there before the tab
    bar is drawn, whatever order the page's scripts arrive in: here Gradio's HTML component comes 3 s late."""
    cy = log_in_as(browser, team_app.url, "cy", TEAM["cy"][1], slow="**/assets/HTML-*.js")
    with screenshot_on_failure(cy, "test_browser_tasks_slow_rater"):
        assert cy.held, "the page asked for no HTML component script: the test held nothing back"
        assert tabs_seen(cy) == {"3. Chat"}
        cy.get_by_role("tab", name="1. Data").wait_for(state="hidden")
        assert [t.strip() for t in cy.get_by_role("tab").all_inner_texts()] == ["3. Chat"]
