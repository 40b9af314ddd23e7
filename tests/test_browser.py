"""A newcomer's first visit, in a real browser: upload a conversation file and read the report, train a tiny model
and watch it finish, then ask the base and the new run the same question and see both answers stream in.

Drives Debian's Chromium through Playwright (never `playwright install`). A failure leaves a screenshot in
test-artifacts/; a pass saves the Chat tab to test-artifacts/compare.png (and to docs/compare.png, the picture the
README shows, when there is none yet).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from test_ui_api import AppProcess, make_workspace

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
BLANK_REPLY = "(no text"

# Records every text the last bot message of each pane shows, so the test can see the replies grow.
RECORD_STREAM = """() => {
  window.__stream = {left: [], right: []};
  window.__lastChange = Date.now();
  const sample = () => {
    for (const side of ["left", "right"]) {
      const bots = document.querySelectorAll(`#${side}-chat .message.bot`);
      const text = bots.length ? bots[bots.length - 1].innerText.trim() : "";
      const seen = window.__stream[side];
      if (text && seen[seen.length - 1] !== text) { seen.push(text); window.__lastChange = Date.now(); }
    }
  };
  new MutationObserver(sample).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


# Records what the Train tab shows at every change while a run trains: the progress state, the run picker's label,
# the runs table's status cell, and the loss plot as drawn (axis labels with their positions, lines, legend).
RECORD_TRAINING = """() => {
  window.__seen = [];
  const plot = () => {
    const svg = document.querySelector('#loss-plot svg');
    if (!svg) return null;
    const axes = {};
    for (const g of svg.querySelectorAll('g.role-axis')) {
      const title = g.querySelector('.role-axis-title text')?.textContent || '?';
      axes[title] = [...g.querySelectorAll('.role-axis-label text')].map(t => {
        const m = /translate\\(([-\\d.e]+),([-\\d.e]+)\\)/.exec(t.getAttribute('transform') || '');
        return [t.textContent, m ? parseFloat(m[1]) : null, m ? parseFloat(m[2]) : null];
      });
    }
    const lines = [...svg.querySelectorAll('.mark-line path')].map(p => ({
      stroke: p.getAttribute('stroke'), points: ((p.getAttribute('d') || '').match(/[ML]/g) || []).length}));
    const legend = [...svg.querySelectorAll('.role-legend-label text')].map(t => t.textContent);
    return {axes, lines, legend};
  };
  const sample = () => {
    const rows = [...document.querySelectorAll('#runs-table tr')]
      .map(tr => [...tr.querySelectorAll('td, [role=gridcell]')].map(cell => cell.textContent.trim()))
      .filter(cells => cells.length);
    const snap = {
      state: document.querySelector('#run-progress .run-progress')?.dataset.state || null,
      picker: document.querySelector('#run-picker input')?.value || '',
      table: rows.length ? rows[0].slice(0, 2) : [],
      plot: plot(),
    };
    const key = JSON.stringify(snap);
    if (window.__lastSeen !== key) { window.__lastSeen = key; window.__seen.push(snap); }
  };
  new MutationObserver(sample).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                       attributes: true});
}"""


def chromium_path() -> str | None:
    path = "/usr/lib/chromium/chromium"
    return path if os.path.exists(path) else shutil.which("chromium")


@contextlib.contextmanager
def launched_chromium():
    """Debian's Chromium, driven by Playwright (never `playwright install`)."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def browser():
    """The browser, for a test that plays several people (a context each)."""
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture()
def browser_page():
    with launched_chromium() as chromium:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        page.outside_requests = []  # anything the page asks of another machine
        page.on("request", lambda r: page.outside_requests.append(r.url)
                if urlparse(r.url).hostname not in (None, "127.0.0.1", "localhost") else None)
        yield page


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        raise


# Runs in every page of a logged-in context before the app's own scripts: it notes each tab of the main bar that was
# ever on screen, however briefly, so a test can tell what a person could have clicked while the page settled.
TABS_SEEN_PROBE = """
window.ftchatTabsSeen = new Set();
setInterval(() => {
  for (const tab of document.querySelectorAll('#main-tabs button[role=tab]')) {
    const box = tab.getBoundingClientRect();
    if (box.width > 0 && box.height > 0 && getComputedStyle(tab).visibility === 'visible') {
      window.ftchatTabsSeen.add(tab.innerText.trim());
    }
  }
}, 5);
"""


def tabs_seen(page) -> set[str]:
    """The main bar's tabs this page ever showed (TABS_SEEN_PROBE)."""
    return set(page.evaluate("() => [...window.ftchatTabsSeen]"))


def log_in(browser, url: str, name: str, password: str, slow: str | None = None):
    """A browser context of its own (its own cookies) for one person, logged in through the app's login form, with
    the page settled (the load events that pick the person's tabs have run). `slow`: a glob of files the browser
    gets 3 s late, as on a slow link (how many it asked for: page.held)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.add_init_script(TABS_SEEN_PROBE)
    held = []
    if slow:
        def hold(route):
            held.append(route.request.url)
            time.sleep(3)  # the browser goes on loading and drawing everything else meanwhile
            route.continue_()

        context.route(slow, hold)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.locator("input[data-testid=textbox]").fill(name)
    page.locator("input[data-testid=password]").fill(password)
    page.get_by_role("button", name="Login").click()
    with screenshot_on_failure(page, f"login_{name}"):
        page.get_by_role("tab", name="3. Chat").wait_for()
        page.wait_for_function("() => !document.querySelector('.pending')")
    page.held = held
    return page


@pytest.fixture()
def app(tmp_path, tiny_model_dir):
    process = AppProcess(make_workspace(tmp_path, tiny_model_dir))
    yield process
    process.stop()


def bot_texts(page, side: str) -> list[str]:
    """The replies a pane shows. Gradio 6's Chatbot may keep a "Loading content" placeholder element beside a long
    reply it has rendered (it is not drawn); it is not a reply."""
    return [t.strip() for t in page.locator(f"#{side}-chat .message.bot").all_inner_texts()
            if t.strip() != "Loading content"]


def pick(page, dropdown_id: str, option: str):
    page.locator(f"#{dropdown_id} input").click()
    page.locator(f"#{dropdown_id}").get_by_role("option", name=option).click()


def upload_and_open_train(page, app, chats_file):
    """Upload `chats_file`, open the Train tab on it with the tiny base, LoRA, and Advanced open without replay."""
    page.goto(app.url)
    page.locator("input[type=file]").set_input_files(str(chats_file))
    page.locator("#data-report").get_by_text("usable examples").wait_for(timeout=60_000)
    page.get_by_role("tab", name="2. Train").click()
    page.locator("#train-data").get_by_text("chats.jsonl ·").wait_for()
    pick(page, "base-model", "workspace: models/tiny")
    page.get_by_label("LoRA", exact=True).check()
    page.get_by_text("Advanced").click()
    page.get_by_label("Replay ratio").fill("0")


@pytest.mark.slow
def test_upload_train_and_compare_in_the_browser(app, browser_page, chats_file):
    page = browser_page
    with screenshot_on_failure(page, "test_upload_train_and_compare_in_the_browser"):
        upload_train_and_compare(page, app, chats_file)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "compare.png"))
    docs_picture = ROOT / "docs" / "compare.png"
    if not docs_picture.exists():  # a picture made with the bundled model by hand is nicer; never replace it
        docs_picture.parent.mkdir(exist_ok=True)
        shutil.copyfile(ARTIFACTS / "compare.png", docs_picture)


def upload_train_and_compare(page, app, chats_file):
    page.goto(app.url)

    # Data: upload a conversation file and read the report
    page.locator("input[type=file]").set_input_files(str(chats_file))
    report = page.locator("#data-report")
    report.get_by_text("usable examples").wait_for(timeout=60_000)
    assert "chats.jsonl · usable" in report.inner_text()
    assert "openai" in report.inner_text() and "messages" in report.inner_text()
    page.get_by_text("What colour is the Zumo lamp?").first.wait_for()  # the preview table
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "data.png"), full_page=True)

    # Train: the uploaded file is already selected; pick the tiny base, LoRA, 6 steps
    page.get_by_role("tab", name="2. Train").click()
    page.locator("#train-data").get_by_text("chats.jsonl ·").wait_for()
    page.get_by_text("Data shape: messages").wait_for()
    pick(page, "base-model", "workspace: models/tiny")
    page.get_by_label("LoRA", exact=True).check()
    page.get_by_text("Advanced").click()
    page.get_by_label("Replay ratio").fill("0")
    page.get_by_label("Max steps").fill("40")
    page.get_by_label("Eval every N steps").fill("10")
    page.get_by_label("Eval split").fill("0.1")  # the plan holds none of 8 rows out; this test reads the eval line
    page.evaluate(RECORD_TRAINING)
    page.locator("#start-training").click()

    progress = page.locator("#run-progress .run-progress")
    page.wait_for_function(
        "() => ['done', 'failed', 'cancelled'].includes("
        "document.querySelector('#run-progress .run-progress')?.dataset.state)", timeout=480_000)
    assert progress.get_attribute("data-state") == "done", page.locator("#run-log").inner_text()
    assert "step 40 / 40" in progress.inner_text()
    run_name = page.locator("#run-picker input").input_value().split(" · ")[0]
    page.wait_for_function("() => window.__seen.at(-1).table[1] === 'done'")
    seen = page.evaluate("window.__seen")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "train.png"), full_page=True)
    check_what_training_showed(seen, run_name)

    # Chat: opened after the run finished, it pairs the new run (right) with its base (left) by itself
    page.get_by_role("tab", name="3. Chat").click()
    page.wait_for_function(
        f"""() => document.querySelector('#left-model input')?.value === 'base · models/tiny'
                 && document.querySelector('#right-model input')?.value === 'run · {run_name} · sft/lora'""")
    page.evaluate(RECORD_STREAM)
    page.locator("#chat-message textarea").fill("What colour is the Zumo lamp?")
    page.locator("#chat-send").click()
    page.wait_for_function(
        """() => ['left', 'right'].every(side => {
             const bots = document.querySelectorAll(`#${side}-chat .message.bot`);
             return bots.length && window.__stream[side].length >= 2
                    && !['', '…'].includes(bots[bots.length - 1].innerText.trim());
           })""", timeout=120_000)
    page.wait_for_function("() => Date.now() - window.__lastChange > 1500")  # the replies stopped growing
    for side in ("left", "right"):
        replies = bot_texts(page, side)
        assert len(replies) == 1 and replies[0] and replies[0] != "…", (side, replies)
        assert not replies[0].startswith(BLANK_REPLY), f"{side} model answered with whitespace only"
        shown = page.evaluate(f"window.__stream.{side}")
        growing = [t for t in shown if t != "…"]
        assert len(growing) >= 2, f"{side} reply did not stream: {shown}"
        assert [m.strip() for m in page.locator(f"#{side}-chat .message.user").all_inner_texts()] == \
            ["What colour is the Zumo lamp?"]
    assert page.outside_requests == [], f"the page asked other machines: {page.outside_requests}"


def check_what_training_showed(seen: list[dict], run_name: str):
    """Every state the Train tab showed while the run trained was true, and the loss plot was readable throughout."""
    running = [s for s in seen if s["state"] == "running"]
    assert running, "the progress never said running"
    # the picker and the table follow the run: never "queued" once it runs, "running" while it does, "done" after
    # (one update redraws the progress and the picker a moment apart: judge from the picker's first "running" on)
    first = next(i for i, s in enumerate(seen) if s["picker"] == f"{run_name} · running")
    assert all(not s["picker"].endswith("· queued") for s in seen[first:]), [s["picker"] for s in seen[first:]]
    assert any(s["table"] == [run_name, "running"] for s in running)
    assert seen[-1]["picker"] == f"{run_name} · done" and seen[-1]["table"] == [run_name, "done"]
    # the plot while training: numeric loss labels that rise up the axis, a drawn line
    drawn = [s for s in running if s["plot"] and any(line["points"] >= 2 for line in s["plot"]["lines"])]
    assert drawn, "no line was drawn while the run trained"
    for snap in [s for s in seen if s["plot"] and s["plot"]["axes"].get("loss")]:
        labels = snap["plot"]["axes"]["loss"]
        values = [float(text) for text, _, _ in labels]  # numbers, not category labels
        by_height = [v for v, (_, _, y) in sorted(zip(values, labels), key=lambda pair: -pair[1][2])]
        assert by_height == sorted(values) and len(set(values)) == len(values), labels
    final = seen[-1]["plot"]
    assert sorted(final["legend"]) == ["eval loss", "train loss"]
    points = sorted(line["points"] for line in final["lines"])
    assert points == [4, 40], final["lines"]  # eval every 10 of 40 steps; train loss at every step
    assert len({line["stroke"] for line in final["lines"]}) == 2 and None not in {l["stroke"] for l in final["lines"]}
    steps = [float(text) for text, _, _ in final["axes"]["step"]]
    assert steps == sorted(steps) and steps[-1] >= 35


def finished_run(runs_root: Path, name: str, base: Path, steps: int, method: str, **scores):
    """A finished run folder as training leaves it, weights aside: config, status, one metrics line per step."""
    import json as json_

    from ftchat import runs
    from ftchat.config import RunConfig

    run_dir = runs_root / name
    run_dir.mkdir(parents=True)
    RunConfig(data=["x.jsonl"], out=str(run_dir), base=str(base), method=method, adapter="lora").save(
        run_dir / "config.yaml")
    lines = [{"step": s, "loss": 2.0 / s, **{k: v * s for k, v in scores.items()}} for s in range(1, steps + 1)]
    (run_dir / "metrics.jsonl").write_text("".join(json_.dumps(line) + "\n" for line in lines))
    runs.write_status(run_dir, "done", started=1.0, step=steps)


PLOT_POINTS = """id => [...document.querySelectorAll(`#${id} svg .mark-line path`)]
  .map(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length)"""


@pytest.mark.slow
def test_picking_another_finished_run_draws_that_runs_lines(tmp_path, tiny_model_dir, browser_page):
    """Moving the picker from one finished run to another once drew the new legend over the old run's lines."""
    workspace = make_workspace(tmp_path, tiny_model_dir)
    base = workspace / "models" / "tiny"
    finished_run(workspace / "runs", "a-dpo", base, 15, "dpo", rewards_margins=0.1, rewards_accuracies=0.05)
    finished_run(workspace / "runs", "b-grpo", base, 8, "grpo", reward=-0.5, kl=0.01)
    app = AppProcess(workspace)
    page = browser_page
    try:
        with screenshot_on_failure(page, "test_picking_another_finished_run"):
            page.goto(app.url)
            page.get_by_role("tab", name="2. Train").click()
            for name, steps in (("a-dpo", 15), ("b-grpo", 8), ("a-dpo", 15)):
                page.locator("#run-picker input").click()
                page.locator("#run-picker").get_by_role("option", name=f"{name} · done").click()
                page.locator("#run-progress").get_by_text(f"step {steps} / ").wait_for()
                page.wait_for_function(f"() => ({PLOT_POINTS})('score-plot').join() === '{steps},{steps}'",
                                       timeout=30_000)
    finally:
        app.stop()
