"""Issue 8's "tried as a new user would", scripted in a real browser (Debian Chromium through Playwright) on `app.py`
with the bundled model: chat base vs a tuned run over a queue of 20 typed prompts, vote on each (by a rule that
stands in for the person: the reply that states the fact's key wins, both: tie, neither: both bad), kill -9 the app
half-way and go on after a restart, start a DPO round from the Feedback tab, chat the new round against its parent
over the same queue, and read the leaderboard and the lineage.

Start it on the workspace that bench/walkthrough.py left (it holds the fine-tuned run and the facts file):
  python bench/walkthrough_feedback.py --workspace /tmp/ftchat-walkthrough-XXXX/workspace
Prints and writes report.json and screenshots to --out. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import ROOT, chromium_page, use_tests, utc_stamp, wait_for_run, write_json

use_tests()
from fictional_facts import GENERAL_CHECKS, conversations  # noqa: E402
from test_browser import pick  # noqa: E402
from test_ui_api import AppProcess  # noqa: E402

VOTE_READY = "() => !document.querySelector('#vote-left').disabled"
ASKED = """text => !document.querySelector('#vote-left').disabled && ['left', 'right'].every(side => {
  const users = document.querySelectorAll(`#${side}-chat .message.user`);
  const bots = document.querySelectorAll(`#${side}-chat .message.bot`);
  return users.length && users[users.length - 1].innerText.trim() === text && bots.length === users.length
         && !['', '…'].includes(bots[bots.length - 1].innerText.trim());
})"""


def rule_vote(left: str, right: str, key: str) -> str:
    has_left, has_right = key.lower() in left.lower(), key.lower() in right.lower()
    if has_left and has_right:
        return "tie"
    if not (has_left or has_right):
        return "bad"
    return "left" if has_left else "right"


def load_queue(page, prompts: list[str]):
    page.locator("#queue-panel").get_by_text("Prompt queue").first.click() if not \
        page.locator("#queue-text textarea").is_visible() else None
    page.locator("#queue-text textarea").fill("\n".join(prompts))
    page.locator("#queue-load").click()
    page.locator("#queue-progress").get_by_text(f"{len(prompts)} prompts loaded").wait_for()
    page.locator("#queue-next").click()  # asks the first prompt; each vote then asks the next
    page.locator("#queue-progress").get_by_text(f"prompt 1 of {len(prompts)}").wait_for()


def rate_queue(page, items: list[tuple[str, str]], log: list[dict], stop_after: int | None = None) -> int:
    """Send each queued prompt, wait for both replies, vote by the rule; the queue asks the next one by itself."""
    done = 0
    for i, (prompt, key) in enumerate(items):
        if stop_after is not None and done == stop_after:
            break
        # the queue asks each prompt by itself (Next prompt, then after every vote): wait for it and both replies
        started = time.time()
        page.wait_for_function(ASKED, arg=prompt, timeout=180_000, polling=250)
        replied = time.time()
        left = page.locator("#left-chat .message.bot").all_inner_texts()[-1].strip()
        right = page.locator("#right-chat .message.bot").all_inner_texts()[-1].strip()
        vote = rule_vote(left, right, key)
        page.locator(f"#vote-{vote}").click()
        page.locator(f"#vote-{vote}").get_by_text("✓ counted").wait_for()
        log.append({"prompt": prompt, "key": key, "left": left, "right": right, "vote": vote,
                    "reply_s": round(replied - started, 2), "rating_s": round(time.time() - started, 2),
                    "left_model": page.locator("#left-model input").input_value(),
                    "right_model": page.locator("#right-model input").input_value()})
        print(json.dumps({k: log[-1][k] for k in ("prompt", "vote", "rating_s")}), flush=True)
        done += 1
    return done


def short_replies(page, tokens: int) -> str:
    """Set the Chat tab's Max new tokens (a person in a hurry does the same); returns what the slider shows."""
    page.get_by_text("System prompt and generation settings").click()
    box = page.locator("input[aria-label='number input for Max new tokens']")
    box.fill(str(tokens))
    box.press("Enter")
    page.get_by_text("System prompt and generation settings").click()
    return box.input_value()


def feedback_counts(page) -> str:
    page.get_by_role("tab", name="4. Feedback").click()
    page.locator("#feedback-refresh").click()
    time.sleep(2)
    return page.locator("#feedback-counts").inner_text()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", required=True, help="the workspace bench/walkthrough.py trained in")
    parser.add_argument("--seed", type=int, default=2611, help="the seed bench/walkthrough.py used")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--kill-after", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=48, help="Max new tokens set in the Chat tab")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "walkthrough-feedback"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(args.workspace)
    [sft] = [p for p in (workspace / "runs").iterdir() if (p / "status.json").exists()]
    _, facts = conversations(args.rows, "system", seed=args.seed)
    # 20 prompts: both held-out paraphrases of each fact, two trained ones, and the general questions
    items = [(q, f.key) for f in facts for q in (*f.held_out, *f.questions[:2])][: 20 - len(GENERAL_CHECKS)]
    items += list(GENERAL_CHECKS.items())
    report: dict = {"date": utc_stamp(), "sft_run": sft.name, "prompts": len(items)}
    log: list[dict] = []
    app = AppProcess(workspace)
    try:
        with chromium_page() as page:
            page.goto(app.url)
            page.get_by_role("tab", name="3. Chat").click()
            page.wait_for_function(f"() => document.querySelector('#right-model input')?.value.includes('{sft.name}')")
            report["chat_pair_first"] = [page.locator(f"#{s}-model input").input_value() for s in ("left", "right")]
            page.locator("#rater input, #rater textarea").first.fill("walkthrough-rule")
            report["max_new_tokens"] = short_replies(page, args.tokens)
            load_queue(page, [p for p, _ in items])
            rate_queue(page, items, log, stop_after=args.kill_after)
            page.screenshot(path=str(out / "1-chat-rating.png"), full_page=True)

            # kill -9 mid-session, restart on the same workspace, and go on with the rest of the queue
            app.process.kill()
            app.process.wait()
            app = AppProcess(workspace)
            report["after_restart_counts"] = None
            page.goto(app.url)
            report["after_restart_counts"] = feedback_counts(page)
            page.get_by_role("tab", name="3. Chat").click()
            page.wait_for_function(f"() => document.querySelector('#right-model input')?.value.includes('{sft.name}')")
            short_replies(page, args.tokens)
            load_queue(page, [p for p, _ in items[args.kill_after:]])
            rate_queue(page, items[args.kill_after:], log)
            report["counts_after_first_queue"] = feedback_counts(page)
            page.screenshot(path=str(out / "2-feedback-before-round.png"), full_page=True)

            # the next round, started from the Feedback tab
            pick(page, "round-run", sft.name)
            page.locator("#start-round").click()
            page.locator("#round-status").get_by_text("started").wait_for(timeout=120_000)
            report["round_status"] = page.locator("#round-status").inner_text()
            started = time.time()
            [round_dir] = [p for p in (workspace / "runs").iterdir() if p.name.startswith(sft.name + "-r1-")]
            status = wait_for_run(round_dir)
            report["round"] = {"run": round_dir.name, "state": status["state"], "wall_s": round(time.time() - started, 1),
                               **{k: status.get("summary", {}).get(k) for k in
                                  ("steps", "runtime_s", "s_per_step", "examples", "lr", "final_loss")}}
            page.get_by_role("tab", name="2. Train").click()
            time.sleep(3)
            page.screenshot(path=str(out / "3-train-round.png"), full_page=True)

            # chat the new round against its parent: the Chat tab pairs them by itself
            page.get_by_role("tab", name="3. Chat").click()
            page.wait_for_function(
                f"() => document.querySelector('#right-model input')?.value.includes('{round_dir.name}')",
                timeout=60_000)
            report["chat_pair_after_round"] = [page.locator(f"#{s}-model input").input_value()
                                               for s in ("left", "right")]
            first_round_votes = len(log)
            load_queue(page, [p for p, _ in items])
            rate_queue(page, items, log)
            page.screenshot(path=str(out / "4-chat-round.png"), full_page=True)
            report["counts_at_end"] = feedback_counts(page)
            pick(page, "lineage-run", round_dir.name)
            page.locator("#lineage").get_by_text("round 1").wait_for()
            report["lineage"] = page.locator("#lineage").inner_text()
            report["leaderboard"] = page.locator("#leaderboard").inner_text()
            page.screenshot(path=str(out / "5-feedback-after-round.png"), full_page=True)
    finally:
        app.stop()
    seconds = [entry["rating_s"] for entry in log]
    report["s_per_rating_median"] = round(statistics.median(seconds), 2)
    report["reply_s_median"] = round(statistics.median(e["reply_s"] for e in log), 2)
    votes_round = [e["vote"] for e in log[first_round_votes:]]
    report["round_vs_parent_votes"] = {v: votes_round.count(v) for v in ("left", "right", "tie", "bad")}
    report["sft_vs_base_votes"] = {v: [e["vote"] for e in log[:first_round_votes]].count(v)
                                   for v in ("left", "right", "tie", "bad")}
    write_json(out / "report.json", {**report, "log": log})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
