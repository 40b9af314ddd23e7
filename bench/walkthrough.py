"""Issue 6's "tried as a new user would", scripted: a real browser (Debian Chromium through Playwright) on `app.py`
with the bundled model, a fresh 25-conversation file about a fictional company (OpenAI `messages` with a system turn,
generated here from a seed nobody tuned on), every training default, Start from the Train tab, then the Chat tab.

It records every state the Train tab showed while the run trained (progress, picker label, runs table, the loss
plot's axis labels and lines, as tests/test_browser.py does), what the Chat tab paired by itself, and the two panes'
answers to held-out paraphrases of the file's facts and to general questions; screenshots go to --out.
Nothing here is asserted: it prints what a person would have seen, for the README and the issue.

Usage: python bench/walkthrough.py [--seed 2611] [--rows 25] [--questions 5] [--out bench/results/walkthrough]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import ROOT, chromium_page, use_tests, utc_stamp, write_json

use_tests()
from fictional_facts import GENERAL_CHECKS, write_set  # noqa: E402
from test_browser import RECORD_STREAM, RECORD_TRAINING  # noqa: E402
from test_ui_api import AppProcess  # noqa: E402

SENT = """n => ['left', 'right'].every(side => document.querySelectorAll(`#${side}-chat .message.user`).length >= n)"""
# the vote buttons wait while replies stream and open when both panes have finished
PANES_DONE = """n => !document.querySelector('#vote-left').disabled && ['left', 'right'].every(side => {
  const bots = document.querySelectorAll(`#${side}-chat .message.bot`);
  return bots.length >= n && !['', '…'].includes(bots[bots.length - 1].innerText.trim());
})"""


def ask(page, question: str, n: int) -> dict[str, str]:
    page.locator("#chat-message textarea").fill(question)
    page.locator("#chat-send").click()
    page.wait_for_function(SENT, arg=n, timeout=60_000)
    page.wait_for_function(PANES_DONE, arg=n, timeout=300_000, polling=500)
    return {side: page.locator(f"#{side}-chat .message.bot").all_inner_texts()[-1].strip()
            for side in ("left", "right")}


def plot_ok(seen: list[dict]) -> dict:
    """Were the loss labels numbers in order, and was a line drawn, at every recorded moment?"""
    bad_labels, moments, drawn_running = [], 0, 0
    for snap in seen:
        if not (snap.get("plot") and snap["plot"]["axes"].get("loss")):
            continue
        moments += 1
        labels = snap["plot"]["axes"]["loss"]
        try:
            values = [float(text) for text, _, _ in labels]
        except ValueError:
            bad_labels.append(labels)
            continue
        by_height = [v for v, (_, _, y) in sorted(zip(values, labels), key=lambda pair: -pair[1][2])]
        if by_height != sorted(values):
            bad_labels.append(labels)
        if snap["state"] == "running" and any(line["points"] >= 2 for line in snap["plot"]["lines"]):
            drawn_running += 1
    return {"moments_with_plot": moments, "moments_with_bad_labels": len(bad_labels),
            "running_moments_with_a_line": drawn_running}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=2611)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--questions", type=int, default=5, help="held-out questions asked in the chat")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "walkthrough"))
    parser.add_argument("--reuse", default=None, help="a folder an earlier run left (ftchat-walkthrough-*): skip to Chat")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="ftchat-walkthrough-"))
    data = home / "acme_support.jsonl"
    facts = write_set(data, args.rows, "system", seed=args.seed)
    workspace = home / "workspace"
    app = AppProcess(workspace)
    report: dict = {"date": utc_stamp(), "rows": args.rows, "seed": args.seed,
                    "page_answered_s": round(app.first_200_s, 1)}
    try:
        with chromium_page() as page:
            page.goto(app.url)
            if args.reuse:
                seen = json.loads((out / "train-states.json").read_text(encoding="utf-8"))
                report["plot"] = plot_ok(seen)
                report["train_tab_states"] = sorted({(s["state"] or "-") + " | " + s["picker"].split(" · ")[-1]
                                                     + " | " + (s["table"][1] if len(s["table"]) > 1 else "-")
                                                     for s in seen})
                report["final_plot"] = seen[-1]["plot"]
            else:
                train_in_the_browser(page, data, out, report)
            chat_part(page, facts, out, report, args)
    finally:
        app.stop()
    write_json(out / "report.json", report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("answers", "final_plot")}, indent=1))


def train_in_the_browser(page, data: Path, out: Path, report: dict):
    page.locator("input[type=file]").set_input_files(str(data))
    page.locator("#data-report").get_by_text("usable examples").wait_for(timeout=120_000)
    report["data_report"] = page.locator("#data-report").inner_text()[:600]
    page.screenshot(path=str(out / "1-data.png"), full_page=True)

    page.get_by_role("tab", name="2. Train").click()
    page.locator("#train-data").get_by_text("acme_support.jsonl ·").wait_for()
    page.get_by_text("Plan:").first.wait_for(timeout=120_000)
    report["plan_shown"] = page.get_by_text("Plan:").first.inner_text()
    page.screenshot(path=str(out / "2-train-before.png"), full_page=True)
    page.evaluate(RECORD_TRAINING)
    started = time.time()
    page.locator("#start-training").click()
    page.wait_for_function(
        "() => ['done', 'failed', 'cancelled'].includes("
        "document.querySelector('#run-progress .run-progress')?.dataset.state)", timeout=1_800_000,
        polling=1000)
    report["train_wall_s"] = round(time.time() - started, 1)
    report["final_state"] = page.locator("#run-progress .run-progress").get_attribute("data-state")
    report["progress_text"] = page.locator("#run-progress").inner_text()[:400]
    time.sleep(3)
    seen = page.evaluate("window.__seen")
    report["train_tab_states"] = sorted({(s["state"] or "-") + " | " + s["picker"].split(" · ")[-1] + " | "
                                         + (s["table"][1] if len(s["table"]) > 1 else "-") for s in seen})
    report["plot"] = plot_ok(seen)
    report["final_plot"] = seen[-1]["plot"] if seen else None
    write_json(out / "train-states.json", seen)
    page.screenshot(path=str(out / "3-train-done.png"), full_page=True)


def chat_part(page, facts, out: Path, report: dict, args):
    page.get_by_role("tab", name="3. Chat").click()
    time.sleep(3)
    report["chat_pair"] = [page.locator(f"#{side}-model input").input_value() for side in ("left", "right")]
    page.evaluate(RECORD_STREAM)
    answers, n = [], 0
    for fact in facts[: args.questions]:
        n += 1
        question = fact.held_out[0]
        got = ask(page, question, n)
        answers.append({"question": question, "key": fact.key, "left": got["left"], "right": got["right"],
                        "left_right": fact.key.lower() in got["left"].lower(),
                        "right_right": fact.key.lower() in got["right"].lower()})
        print(json.dumps(answers[-1]), flush=True)
    for question, key in GENERAL_CHECKS.items():
        n += 1
        got = ask(page, question, n)
        answers.append({"question": question, "key": key, "left": got["left"], "right": got["right"],
                        "left_right": key.lower() in got["left"].lower(),
                        "right_right": key.lower() in got["right"].lower(), "general": True})
        print(json.dumps(answers[-1]), flush=True)
    page.screenshot(path=str(out / "4-chat.png"), full_page=True)
    report["answers"] = answers
    facts_asked = [a for a in answers if not a.get("general")]
    general = [a for a in answers if a.get("general")]
    report["facts_right"] = {"base (left)": sum(a["left_right"] for a in facts_asked),
                             "tuned (right)": sum(a["right_right"] for a in facts_asked),
                             "of": len(facts_asked)}
    report["general_right"] = {"base (left)": sum(a["left_right"] for a in general),
                               "tuned (right)": sum(a["right_right"] for a in general), "of": len(general)}


if __name__ == "__main__":
    main()
