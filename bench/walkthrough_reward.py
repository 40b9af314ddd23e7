"""Issue 9's "tried as a new user would", scripted in Chromium on `app.py` with the bundled model: on a workspace that
already holds votes (the one bench/walkthrough_feedback.py left), start a reward-RL round from the Feedback tab, watch
the reward model and then the GRPO run in the Train tab (the rendered reward plot is read), and judge the new round
against its parent with the reward model in the Feedback tab, next to the votes. Nothing is asserted; it prints what
was seen and saves screenshots.

Usage: python bench/walkthrough_reward.py --workspace DIR [--steps 8] [--out bench/results/walkthrough-reward]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import ROOT, chromium_page, read_metrics, use_tests, utc_stamp, wait_for_run, write_json

use_tests()
from test_ui_api import AppProcess  # noqa: E402

SCORE_PLOT = """() => {
  const svg = document.querySelector('#score-plot svg');
  if (!svg) return null;
  const labels = [...svg.querySelectorAll('g.role-axis')].map(g => [...g.querySelectorAll('.role-axis-label text')]
    .map(t => t.textContent));
  const lines = [...svg.querySelectorAll('.mark-line path')].map(p => ((p.getAttribute('d') || '').match(/[ML]/g)
    || []).length);
  const legend = [...svg.querySelectorAll('.role-legend-label text')].map(t => t.textContent);
  return {labels, lines, legend};
}"""


def choose(page, dropdown_id: str, name: str, label_starts: bool = False):
    """Pick the option whose label is `name` (or starts with `name · `, for pickers that add the state)."""
    page.locator(f"#{dropdown_id} input").click()
    options = page.locator(f"#{dropdown_id}").get_by_role("option")
    if label_starts:
        options.filter(has_text=f"{name} · ").first.click()
    else:
        page.locator(f"#{dropdown_id}").get_by_role("option", name=name, exact=True).click()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--steps", type=int, default=8, help="Max steps typed in the round form (the GRPO run's)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "walkthrough-reward"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(args.workspace)
    sft = next(p.name for p in sorted((workspace / "runs").iterdir()) if "-r" not in p.name[-12:])
    report: dict = {"date": utc_stamp(), "from": sft}
    app = AppProcess(workspace)
    try:
        with chromium_page() as page:
            page.goto(app.url)
            page.get_by_role("tab", name="4. Feedback").click()
            choose(page, "round-run", sft)
            page.get_by_text("Reward model from the votes, then GRPO against it").click()
            page.locator("#round-status").get_by_text("Ready").wait_for()
            report["readiness"] = page.locator("#round-status").inner_text()
            page.locator("#round-steps input").fill(str(args.steps))
            page.locator("#start-round").click()
            page.locator("#round-status").get_by_text("started").wait_for(timeout=120_000)
            report["started"] = page.locator("#round-status").inner_text()
            rm_dir = next(p for p in (workspace / "runs").iterdir() if p.name.endswith("-grpo-rm"))
            rl_dir = workspace / "runs" / rm_dir.name[: -len("-rm")]
            started = time.time()
            rm_status = wait_for_run(rm_dir, timeout=3600)
            report["reward_model"] = {"state": rm_status["state"], "wall_s": round(time.time() - started, 1),
                                      **{k: rm_status.get("summary", {}).get(k) for k in
                                         ("steps", "examples", "eval_examples", "eval_accuracy", "eval_margin",
                                          "runtime_s", "s_per_step")}}
            rl_status = wait_for_run(rl_dir, timeout=3600)
            report["grpo"] = {"state": rl_status["state"], "wall_s": round(time.time() - started, 1),
                              **{k: rl_status.get("summary", {}).get(k) for k in
                                 ("steps", "runtime_s", "s_per_step", "first_reward", "final_reward")}}
            report["reward_per_step"] = [round(m["reward"], 3) for m in read_metrics(rl_dir) if "reward" in m]

            page.get_by_role("tab", name="2. Train").click()
            choose(page, "run-picker", rl_dir.name, label_starts=True)
            page.wait_for_function("() => document.querySelector('#score-plot svg .mark-line path')", timeout=60_000)
            time.sleep(2)
            report["reward_plot"] = page.evaluate(SCORE_PLOT)
            page.screenshot(path=str(out / "1-train-grpo.png"), full_page=True)

            page.get_by_role("tab", name="4. Feedback").click()
            page.locator("#feedback-refresh").click()
            choose(page, "lineage-run", rl_dir.name, label_starts=True)
            page.locator("#lineage").get_by_text("round 1").wait_for()
            choose(page, "judge-reward", rm_dir.name)
            page.get_by_text("the prompts it and its parent were rated on").click()
            page.locator("#judge-parent").click()
            page.locator("#judge-status").get_by_text("judged").wait_for(timeout=900_000)
            report["judge_status"] = page.locator("#judge-status").inner_text()
            report["lineage"] = page.locator("#lineage").inner_text()
            page.screenshot(path=str(out / "2-feedback-judged.png"), full_page=True)
    finally:
        app.stop()
    write_json(out / "report.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
