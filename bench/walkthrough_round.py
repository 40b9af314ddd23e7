"""Issue 17's loop in a real browser (Debian Chromium through Playwright) on `app.py` with the bundled model, as a
person would teach a habit: ask the base a few everyday questions in the Chat tab, write a better answer for each (the
base's own reply with a sign-off it never writes: invented names from --seed), start the next round from the Feedback
tab, then ask the round and its parent questions neither saw, vote on them by a rule that stands in for the person
(the reply that signs off wins), ask both the general questions of round_learning.py (does the round still answer
what its parent knew?), and read the round report.

Prints and writes report.json and screenshots to --out. Nothing is asserted.

Usage: python bench/walkthrough_round.py [--seed 9173] [--rated 8] [--unseen 6] [--out bench/results/walkthrough-round]
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import round_learning as rl
from common import ROOT, chromium_page, use_tests, utc_stamp, wait_for_run, write_json
from walkthrough_feedback import ASKED, feedback_counts, short_replies

use_tests()
from test_browser import pick  # noqa: E402
from test_ui_api import AppProcess  # noqa: E402


def ask(page, prompt: str) -> tuple[str, str]:
    """A fresh exchange: Clear, type the prompt, Send, and wait until both panes have answered it."""
    page.locator("#chat-clear").click()
    page.wait_for_function("() => !document.querySelector('#left-chat .message')")
    time.sleep(0.5)
    page.locator("#chat-message textarea").fill(prompt)
    page.locator("#chat-send").click()
    page.wait_for_function(ASKED, arg=prompt, timeout=180_000, polling=250)
    return tuple(page.locator(f"#{side}-chat .message.bot").all_inner_texts()[-1].strip() for side in ("left", "right"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=9173, help="invented names and questions (no default was chosen "
                                                                "on it)")
    parser.add_argument("--rated", type=int, default=8, help="questions the person writes a better answer for")
    parser.add_argument("--unseen", type=int, default=6, help="questions asked after the round")
    parser.add_argument("--tokens", type=int, default=96, help="Max new tokens while rating")
    parser.add_argument("--eval-tokens", type=int, default=128, help="Max new tokens after the round")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "walkthrough-round"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = rl.World(args.seed)
    questions = world.prompts(args.rated + args.unseen)
    rated, unseen = questions[:args.rated], questions[args.rated:]
    report: dict = {"date": utc_stamp(), "seed": args.seed, "signoff": world.signoff, "rated": [], "after": []}
    workspace = Path(tempfile.mkdtemp(prefix="ftchat-walkthrough-round-")) / "workspace"
    workspace.mkdir()
    app = AppProcess(workspace, warm=True)
    try:
        with chromium_page() as page:
            page.goto(app.url)
            page.get_by_role("tab", name="3. Chat").click()
            page.wait_for_function("() => document.querySelector('#right-model input')?.value")
            report["chat_pair_first"] = [page.locator(f"#{s}-model input").input_value() for s in ("left", "right")]
            page.locator("#rater input, #rater textarea").first.fill("walkthrough-round")
            short_replies(page, args.tokens)
            page.get_by_text("Write a better answer").click()
            for prompt in rated:
                started = time.time()
                left, _ = ask(page, prompt)
                better = f"{rl.clean(left) or left}\n\n{world.signoff}"
                page.locator("#better-text textarea").fill(better)
                page.locator("#better-save").click()
                page.locator("#vote-status").get_by_text("saved your answer for the left reply").wait_for()
                report["rated"].append({"prompt": prompt, "reply": left, "better": better,
                                        "s": round(time.time() - started, 1)})
                print(json.dumps({"rated": prompt, "s": report["rated"][-1]["s"]}), flush=True)
            page.screenshot(path=str(out / "1-chat-better-answers.png"), full_page=True)
            report["counts_before_round"] = feedback_counts(page)

            report["round_from"] = page.locator("#round-run input").input_value()  # what the tab picked itself
            if "smollm2" not in report["round_from"].lower():
                pick(page, "round-run", "base:smollm2-135m")
                report["round_from"] = page.locator("#round-run input").input_value()
            page.locator("#start-round").click()
            page.locator("#round-status").get_by_text("started").wait_for(timeout=120_000)
            report["round_status"] = page.locator("#round-status").inner_text()
            page.screenshot(path=str(out / "2-feedback-round-started.png"), full_page=True)
            started = time.time()
            [round_dir] = [p for p in (workspace / "runs").iterdir() if (p / "requested.yaml").exists()]
            status = wait_for_run(round_dir)
            report["round"] = {"run": round_dir.name, "state": status["state"], "error": status.get("error"),
                               "wall_s": round(time.time() - started, 1),
                               **{k: status.get("summary", {}).get(k) for k in
                                  ("examples", "steps", "runtime_s", "s_per_step", "plan", "final_loss")}}
            print(json.dumps(report["round"]), flush=True)
            page.get_by_role("tab", name="2. Train").click()
            time.sleep(3)
            page.screenshot(path=str(out / "3-train-round.png"), full_page=True)

            # the Chat tab pairs the new round with its parent by itself
            page.get_by_role("tab", name="3. Chat").click()
            page.locator("#chat-refresh").click()
            page.wait_for_function(
                f"() => document.querySelector('#right-model input')?.value.includes('{round_dir.name}')",
                timeout=60_000)
            report["chat_pair_after_round"] = [page.locator(f"#{s}-model input").input_value()
                                               for s in ("left", "right")]
            short_replies(page, args.eval_tokens)
            for prompt in unseen:
                left, right = ask(page, prompt)
                signs = [rl.follows("signoff", reply, world) for reply in (left, right)]
                vote = {(True, True): "tie", (False, False): "bad", (True, False): "left", (False, True): "right"}[
                    tuple(signs)]
                page.locator(f"#vote-{vote}").click()
                page.locator(f"#vote-{vote}").get_by_text("✓ counted").wait_for()
                report["after"].append({"prompt": prompt, "left": left, "right": right, "left_signs": signs[0],
                                        "right_signs": signs[1], "vote": vote})
                print(json.dumps({"unseen": prompt, "left_signs": signs[0], "right_signs": signs[1]}), flush=True)
            page.screenshot(path=str(out / "4-chat-round-vs-parent.png"), full_page=True)
            # general questions the parent may know: does the round still answer them? (asked, not voted on)
            report["general"] = []
            for question, pattern in rl.GENERAL:
                left, right = ask(page, question)
                report["general"].append({"prompt": question, "parent": left, "round": right,
                                          "parent_ok": bool(re.search(pattern, left.lower())),
                                          "round_ok": bool(re.search(pattern, right.lower()))})
                print(json.dumps({k: report["general"][-1][k] for k in ("prompt", "parent_ok", "round_ok")}),
                      flush=True)
            page.locator("#chat-clear").click()

            report["counts_at_end"] = feedback_counts(page)
            pick(page, "lineage-run", f"{round_dir.name} · done")
            page.locator("#round-report-button").click()
            page.locator("#round-report").get_by_text(f"Did {round_dir.name} help?").wait_for(timeout=120_000)
            report["round_report"] = page.locator("#round-report").inner_text()
            report["lineage"] = page.locator("#lineage").inner_text()
            report["leaderboard"] = page.locator("#leaderboard").inner_text()
            page.screenshot(path=str(out / "5-feedback-round-report.png"), full_page=True)
    finally:
        app.stop()
    after = report["after"]
    report["summary"] = {"rated": len(report["rated"]), "unseen": len(after),
                         "parent_signs": sum(a["left_signs"] for a in after),
                         "round_signs": sum(a["right_signs"] for a in after),
                         "general_parent_knew": sum(g["parent_ok"] for g in report["general"]),
                         "general_round_kept": sum(g["parent_ok"] and g["round_ok"] for g in report["general"])}
    write_json(out / "report.json", report)
    print(json.dumps({k: report[k] for k in ("summary", "round", "chat_pair_after_round")}, indent=1))
    print(report["round_report"])


if __name__ == "__main__":
    main()
