"""Rating in a real browser: chat with two models, vote, and find the vote counted in the Feedback tab; in arena
mode the panes say "Model A" / "Model B" until the vote and name the models after it.

Drives Debian's Chromium through Playwright like tests/test_browser.py; a failure leaves a screenshot in
test-artifacts/.
"""
from __future__ import annotations

import math
import random

import pytest
from test_browser import ARTIFACTS, browser_page, pick, screenshot_on_failure  # noqa: F401  (fixtures)
from test_feedback_ui import two_bases
from test_ui_api import AppProcess

from ftchat.feedback import FeedbackStore

pytestmark = pytest.mark.slow


@pytest.fixture()
def app(tmp_path, tiny_model_dir):
    workspace, _, _ = two_bases(tmp_path, tiny_model_dir)
    process = AppProcess(workspace)
    yield process
    process.stop()


def pane_label(page, side: str) -> str:
    return page.locator(f"#{side}-chat [data-testid=block-label]").inner_text().strip()


def table_shows(page, text: str):
    page.wait_for_function("text => document.querySelector('#ratings-table').innerText.includes(text)", arg=text)


def ask_and_wait_for_the_vote(page, text: str):
    page.locator("#chat-message textarea").fill(text)
    page.locator("#chat-send").click()
    page.wait_for_function("() => !document.querySelector('#vote-left').disabled", timeout=120_000)


def test_chat_vote_and_see_it_counted_then_vote_blind_in_arena_mode(app, browser_page):
    page = browser_page
    with screenshot_on_failure(page, "test_chat_vote_and_see_it_counted"):
        page.goto(app.url)
        page.get_by_role("tab", name="3. Chat").click()
        pick(page, "left-model", "base · models/tiny")
        pick(page, "right-model", "base · models/second")
        assert page.locator("#vote-left").is_disabled()  # nothing to vote on yet
        page.locator("#rater input, #rater textarea").first.fill("Ilse")

        ask_and_wait_for_the_vote(page, "What colour is the Zumo lamp?")
        for side in ("left", "right"):  # the replies scroll below the pane's label, never under it
            label = page.locator(f"#{side}-chat [data-testid=block-label]").bounding_box()
            replies = page.locator(f"#{side}-chat .bubble-wrap").bounding_box()
            assert replies["y"] >= label["y"] + label["height"], (side, label, replies)
        page.screenshot(path=str(ARTIFACTS / "chat-panes.png"))
        page.locator("#vote-left").click()
        page.locator("#vote-left").get_by_text("✓ counted: left better").wait_for()
        for other in ("vote-right", "vote-tie", "vote-bad"):
            assert page.locator(f"#{other}").is_disabled()
        assert "rating #1" in page.locator("#vote-status").inner_text()

        page.get_by_role("tab", name="4. Feedback").click()
        counts = page.locator("#feedback-counts")
        counts.get_by_text("1 rating").wait_for()
        assert "1 vote" in counts.inner_text()
        table_shows(page, "Ilse")

        # arena mode: nameless panes until the vote
        page.get_by_role("tab", name="3. Chat").click()
        page.locator("#arena-mode input").check()
        ask_and_wait_for_the_vote(page, "Who makes the Zumo lamp?")
        assert (pane_label(page, "left"), pane_label(page, "right")) == ("Model A", "Model B")
        assert "models/tiny" not in page.locator("#left-chat").inner_text() + page.locator("#right-chat").inner_text()
        page.locator("#vote-tie").click()
        page.locator("#vote-tie").get_by_text("✓ counted: tie").wait_for()
        revealed = {pane_label(page, "left"), pane_label(page, "right")}
        assert revealed == {"Model A was base · models/tiny", "Model B was base · models/second"} or \
            revealed == {"Model A was base · models/second", "Model B was base · models/tiny"}

        # Clear starts a fresh exchange: the panes and the vote go, the question being typed stays
        page.locator("#chat-message textarea").fill("Where is the Zumo lamp made?")
        page.locator("#chat-clear").click()
        page.wait_for_function("() => !document.querySelector('#left-chat .message')"
                               " && !document.querySelector('#right-chat .message')")
        assert page.locator("#vote-tie").is_disabled() and "counted" not in page.locator("#vote-tie").inner_text()
        assert page.locator("#chat-message textarea").input_value() == "Where is the Zumo lamp made?"

        page.get_by_role("tab", name="4. Feedback").click()
        page.locator("#feedback-counts").get_by_text("2 ratings").wait_for()
        assert "2 votes" in page.locator("#feedback-counts").inner_text()
        table_shows(page, "yes")  # the blind vote is marked
        # one win and one tie of two votes: tiny leads, and two votes do not make it surely better
        board = page.locator("#leaderboard")
        page.wait_for_function("() => document.querySelector('#leaderboard').innerText.includes('models/second')")
        label, cells = board.inner_text().split("votes", 1)
        assert "rank: 1 + the models whose whole interval lies above this one's" in label
        cells = [line.strip() for line in cells.splitlines() if line.strip()]
        rows = [cells[i:i + 5] for i in range(0, len(cells), 5)]  # rank, model, rating, 95% CI, votes
        assert [(row[0], row[1], row[4]) for row in rows] == [("1", "base:models/tiny", "2"),
                                                              ("1", "base:models/second", "2")], rows
        assert int(rows[0][2]) - int(rows[1][2]) == round(400 * math.log10(2 / 1))  # 1.5 + 0.5 won of 3 games

        # a round built from the first vote (recorded as next_round_config records it): the Round filter tells
        # the ratings it used from the new one
        FeedbackStore.for_workspace(app.workspace).mark_used("second-r1-dpo", [1])
        page.locator("#feedback-refresh").click()
        page.locator("#filter-round input").click()
        options = page.locator("#filter-round [role=option]")
        options.get_by_text("second-r1-dpo (1 rating)").wait_for()
        shown = [text.replace("✓", "").strip() for text in options.all_inner_texts()]  # ✓ marks the current one
        assert shown == ["all", "not used by a round yet (1)", "second-r1-dpo (1 rating)"]
        options.get_by_text("not used by a round yet (1)").click()
        page.wait_for_function("() => !document.querySelector('#ratings-table').innerText.includes("
                               "'What colour is the Zumo lamp?')")  # the first vote, used by the round, is gone
        table_shows(page, "Who makes the Zumo lamp?")  # the blind vote, not used yet, stays

        # "Did this round help?": a round of `second` with 4 votes against its parent (3 won, 1 lost)
        from test_feedback_rounds import fake_run

        store = FeedbackStore.for_workspace(app.workspace)
        fake_run(app.workspace / "runs", "second-r1-dpo", base=str(app.workspace / "models" / "second"))
        parent = "base:" + str(app.workspace / "models" / "second")
        for i, winner in enumerate(["a", "a", "b", "a"]):
            store.add_vote([{"role": "user", "content": f"Round question {i}?"}], "second-r1-dpo", parent,
                           f"round reply {i}", f"parent reply {i}", winner, rater="Ilse")
        page.locator("#feedback-refresh").click()
        # round after round: the rated round is where the next one starts, not the base the tab opened with
        page.wait_for_function("() => document.querySelector('#round-run input').value === 'second-r1-dpo'")
        pick(page, "round-run", "base:models/second")  # a person's own choice stays through a refresh
        page.locator("#round-status").get_by_text("base:models/second").wait_for()
        page.locator("#feedback-refresh").click()
        page.wait_for_function("() => !document.querySelector('.pending')")
        assert page.locator("#round-run input").input_value() == "base:models/second"
        pick(page, "lineage-run", "second-r1-dpo · done")
        report = page.locator("#round-report")
        report.get_by_text("Did second-r1-dpo help?").wait_for()
        text = report.inner_text()
        assert "vs its parent (base:models/second): wins 75% (95% interval 30%–95%) over 4 votes: 3 won, 1 lost, 0 tied" \
            in text
        assert "about 12 more votes at this rate would settle it" in text
        assert "Regressions: 1 prompt(s) where it lost to its parent; newly wins 3" in text
        assert "“Round question 2?” — round: “round reply 2” · parent: “parent reply 2”" in text
        # the round sat on the left in every vote: its wins say nothing about a side
        assert "Left pane: not measured: each model kept its side in all 4 decisive votes" in text
        assert "voting by side" not in text
        page.screenshot(path=str(ARTIFACTS / "round-report.png"), full_page=True)

        # "Rate these next": the regression lands in the Chat tab's queue, on the round and its parent
        page.locator("#rate-next").click()
        page.locator("#queue-progress").get_by_text("1 prompt loaded from typed prompts").wait_for()
        assert page.locator("#queue-text textarea").input_value() == "Round question 2?"
        assert "second-r1-dpo" in page.locator("#right-model input").input_value()


def test_a_reward_rl_round_says_what_it_trains_on_and_what_grpo_cannot_teach(tmp_path, browser_page):
    """Ten decisive votes and two ties on the bundled base (seeded, fictional), four of them already used by a round:
    the DPO line says so; picking the reward-RL round shows 10 pairs for the reward model, 12 rated prompts for GRPO,
    and that a habit the model never shows is DPO's or KTO's."""
    rng = random.Random(29)
    workspace = tmp_path / "workspace"
    store = FeedbackStore.for_workspace(workspace)
    base = "base:smollm2-135m"
    ids = []
    for i in range(12):
        brand = rng.choice(["Orvik", "Talmo"])
        prompt = [{"role": "user", "content": f"How do I descale the {brand} kettle no. {i}?"}]
        outcome = "tie" if i >= 10 else rng.choice(["a", "b"])
        ids.append(store.add_vote(prompt, base, base, "Use vinegar, then rinse twice. — Ossa, Orvik care", "Not sure.",
                                  outcome))
    store.mark_used("smollm2-135m-r1-dpo", ids[:4])  # as a first round from the base records it
    app = AppProcess(workspace)
    page = browser_page
    try:
        with screenshot_on_failure(page, "feedback-reward-rl"):
            page.goto(app.url)
            page.get_by_role("tab", name="4. Feedback").click()
            pick(page, "round-run", base)
            status = page.locator("#round-status")
            status.get_by_text("trains on them again").wait_for()
            assert status.inner_text() == ("Ready: the ratings of base:smollm2-135m give 10 DPO pairs. 4 of its ratings "
                                           "already trained smollm2-135m-r1-dpo: this round trains on them again.")
            ARTIFACTS.mkdir(exist_ok=True)
            status.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "feedback-round-reuse.png"))
            page.get_by_label("Reward model from the votes, then GRPO against it").check()
            status.get_by_text("taught by DPO or KTO").wait_for()
            text = status.inner_text()
            assert text.startswith("Ready: 10 pairs from all votes train the reward model"), text
            assert "practises on its 12 rated prompts with GRPO" in text, text
            ARTIFACTS.mkdir(exist_ok=True)
            status.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "feedback-reward-rl.png"))
    finally:
        app.stop()
