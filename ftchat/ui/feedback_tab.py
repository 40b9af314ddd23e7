"""Feedback tab: the ratings given in the Chat tab (filter, delete, export, import), the leaderboard, the raters and
their rating tasks, the lineage of rounds, and the button that trains the next round from the votes. The rules live
in ftchat.feedback.*; this module draws and wires."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ftchat import runs
from ftchat.chat.generation import ChatError
from ftchat.feedback import agreement, export, leaderboard, rounds, tasks
from ftchat.feedback.imports import import_file
from ftchat.feedback.prompt_queue import PromptError, prompts_from_file
from ftchat.feedback.prompt_queue import prompts_from_text as prompt_queue_text
from ftchat.feedback.report import ReportError, describe_report, round_report
from ftchat.feedback.store import UNUSED, FeedbackError
from ftchat.models import ModelError
from ftchat.names import base_choice, base_of_choice, is_base
from ftchat.train.reward_model import RewardModelError, reward_runs
from ftchat.ui.charts import interval_chart
from ftchat.ui.context import AppContext
from ftchat.ui.roles import logged_in

RATING_COLUMNS = ["id", "time", "kind", "rater", "outcome", "model A (left)", "model B (right)", "prompt", "reply A",
                  "reply B / written answer", "blind", "source"]
LEADERBOARD_COLUMNS = ["rank", "model", "rating", "95% CI", "votes"]
RATER_COLUMNS = ["rater", "votes", "thumbs", "written answers", "left pane wins", "shared prompts",
                 "agrees with the others", "the others agree", "kappa with the others", "flags"]
PAIR_COLUMNS = ["rater", "rater ", "shared prompts", "agree", "Cohen's kappa"]
TASK_COLUMNS = ["rater", "done", "assigned", "progress", "overlap prompts", "votes", "left pane wins",
                "agrees with the others", "kappa with the others", "flags"]
OUTCOME = {"a": "A better", "b": "B better", "tie": "tie", "bothbad": "both bad"}
KIND_CHOICES = [("all", ""), ("votes", "vote"), ("thumbs", "thumb"), ("written answers", "edit")]
SOURCE_CHOICES = [("all", ""), ("rated here", "ftchat"), ("imported", "import")]
EXPORT_CHOICES = [("DPO pairs (prompt / chosen / rejected)", "dpo"), ("KTO rows (prompt / completion / label)", "kto"),
                  ("SFT conversations (messages)", "sft"), ("all ratings (ftchat's own format, re-importable)",
                                                            "ratings")]


@dataclass
class FeedbackTab:
    refresh: gr.Button
    rate_next: object  # the "Rate these next" event: then the app moves its prompts into the Chat tab
    next_prompts: gr.Textbox  # one prompt a line
    next_pair: gr.State  # (left model, right model) to rate them on


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def clip(text, limit: int = 120) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build(ctx: AppContext, demo: gr.Blocks, page: gr.Tab) -> FeedbackTab:
    try:
        ctx.feedback()
    except FeedbackError as exc:  # the other tabs still work; this one says what is wrong and leaves the file alone
        return unreadable(str(exc))
    return build_ratings(ctx, demo, page)


def unreadable(problem: str) -> FeedbackTab:
    """The tab when the ratings cannot be read (a damaged feedback.sqlite, a --feedback-db server that cannot be
    reached): why, and what to do; restart the app once that is fixed."""
    gr.Markdown(f"### The ratings cannot be used\n\n{html.escape(problem)}\n\nUntil then votes are not kept; "
                "restart the app once this is fixed.", elem_id="feedback-problem")
    refresh = gr.Button("↻ Refresh", visible=False)
    next_prompts = gr.Textbox(visible=False)
    next_pair = gr.State((None, None))
    rate_next = gr.Button(visible=False).click(lambda: ("", (None, None)), outputs=[next_prompts, next_pair],
                                               api_visibility="private")
    return FeedbackTab(refresh, rate_next, next_prompts, next_pair)


def build_ratings(ctx: AppContext, demo: gr.Blocks, page: gr.Tab) -> FeedbackTab:
    def short(name: str | None) -> str:
        """A model's name as people read it: a workspace model folder as base:models/NAME."""
        if not name:
            return ""
        if is_base(name):
            return base_choice(ctx.workspace.base_label(base_of_choice(name)))
        return name

    def rated_runs() -> list[tuple[str, str]]:
        return [(short(name), name) for name in rounds.round_sources(ctx.feedback(), ctx.workspace.root)]

    def lineage_choices() -> list[tuple[str, str]]:
        return [(f"{r.name} · {r.state}", r.name) for r in runs.list_runs(ctx.workspace.runs_dir)]

    def model_choices() -> list[tuple[str, str]]:
        return ctx.engine().choices()

    def rater_choices() -> list[str]:
        team = ctx.users.read() if ctx.users is not None else {}
        return sorted(name for name, entry in team.items() if entry["role"] == "rater")

    def task_choices() -> list[tuple[str, str]]:
        return [(f"{t['name']} ({plural(t['items'], 'item')})", t["name"]) for t in ctx.feedback().tasks()]

    def judge_choices() -> list[tuple[str, str]]:
        """Finished reward-model runs: what can judge a round against its parent."""
        return [(path.name, path.name) for path in reward_runs(ctx.workspace.runs_dir)]

    kept_in = f"`{ctx.feedback().name}`" if ctx.feedback_db else "the workspace (`feedback.sqlite`)"
    gr.Markdown(f"Every vote, thumb and written answer from the Chat tab is kept in {kept_in}. Export them as "
                "training data, see which model wins, and train the next round from the votes.")
    with gr.Row():
        counts = gr.Markdown("", elem_id="feedback-counts")
        refresh = gr.Button("↻ Refresh", scale=0, elem_id="feedback-refresh")

    with gr.Accordion("Leaderboard", open=True):
        with gr.Row():
            anonymous_only = gr.Checkbox(False, label="Arena (blind) votes only", elem_id="anonymous-only")
            exclude_flagged = gr.Checkbox(False, label="Leave out the votes of flagged raters (see Raters), here and "
                                                       "in the next round", elem_id="exclude-flagged")
        board = gr.Dataframe(headers=LEADERBOARD_COLUMNS, interactive=False, elem_id="leaderboard", wrap=True,
                             label="Bradley–Terry ratings (a tie counts half a win each; rank: 1 + the models whose "
                                   "whole interval lies above this one's, as Chatbot Arena ranks)")
        chart = gr.HTML("", elem_id="leaderboard-plot")
        matrix = gr.Dataframe(interactive=False, elem_id="win-matrix", wrap=True,
                              label="Win rate of the row model against the column model (ties half; blank: never met)")

    with gr.Accordion("Raters: how many ratings each gave, and how they agree", open=False):
        team_summary = gr.Markdown("", elem_id="rater-summary")
        rater_table = gr.Dataframe(headers=RATER_COLUMNS, interactive=False, wrap=True, elem_id="rater-table",
                                   label="Per rater (left pane wins: share of their left-or-right votes that chose "
                                         "the left pane)")
        pair_table = gr.Dataframe(headers=PAIR_COLUMNS, interactive=False, wrap=True, elem_id="rater-pairs",
                                  label="Agreement per pair of raters, on the prompts (and model pairs) both voted on")

    with gr.Accordion("Rating tasks: share prompts out among raters", open=False, elem_id="tasks-panel"):
        gr.Markdown("Each prompt goes to one rater, the overlap share to two (to measure how they agree). Each "
                    "rater's Chat tab then brings their next prompt with the task's two models, and their progress.")
        with gr.Row():
            task_text = gr.Textbox(label="Prompts, one per line", lines=4, elem_id="task-prompts", scale=3)
            task_file = gr.File(label="…or a file (.txt: one prompt per line; or any data file)",
                                file_types=[".txt", ".jsonl", ".json", ".csv", ".tsv"], elem_id="task-file", scale=2)
        with gr.Row():
            task_models = gr.Dropdown(model_choices(), value=[], multiselect=True, elem_id="task-models", scale=3,
                                      label="Models (two; more: a pair drawn per prompt, arena-style)")
            task_raters = gr.Dropdown(rater_choices(), value=[], multiselect=True, allow_custom_value=True, scale=2,
                                      label="Raters (none picked: every rater)", elem_id="task-raters")
            task_overlap = gr.Slider(0, 1, value=tasks.DEFAULT_OVERLAP, step=0.05, elem_id="task-overlap", scale=1,
                                     label="Overlap: share of prompts to two raters")
            task_name = gr.Textbox(label="Task name", elem_id="task-name", scale=1, max_lines=1)
            create_task_button = gr.Button("Create task", variant="primary", elem_id="create-task", scale=1)
        task_status_line = gr.Markdown("", elem_id="task-created")
        task_pick = gr.Dropdown(task_choices(), value=None, label="Task", elem_id="task-pick", allow_custom_value=True)
        task_summary = gr.Markdown("", elem_id="task-summary")
        task_table = gr.Dataframe(headers=TASK_COLUMNS, interactive=False, wrap=True, elem_id="task-table",
                                  label="Per rater: their items, votes, left pane share and agreement on the "
                                        "overlap prompts")

    with gr.Accordion("Lineage and the next round", open=True):
        lineage_run = gr.Dropdown(lineage_choices(), value=None, label="Lineage of the run", elem_id="lineage-run",
                                  allow_custom_value=True)
        lineage_view = gr.HTML("", elem_id="lineage")
        with gr.Row():
            report_button = gr.Button("Did this round help? Round report", elem_id="round-report-button", scale=2)
            rate_next = gr.Button("Rate these next: its regressions and the judge's least sure prompts, in the Chat "
                                  "tab's prompt queue", elem_id="rate-next", scale=3)
        report_view = gr.Markdown("", elem_id="round-report")
        next_prompts = gr.Textbox(visible=False, elem_id="rate-next-prompts")
        next_pair = gr.State((None, None))  # (left, right): the parent and the run, for the Chat tab
        with gr.Row():
            judge_reward = gr.Dropdown(judge_choices(), value=None, label="Judge with reward model",
                                       elem_id="judge-reward", scale=2, allow_custom_value=True)
            judge_source = gr.Radio([(text, key) for key, text in rounds.JUDGE_SOURCES.items()], value="held_out",
                                    label="on", elem_id="judge-source", scale=2)
            judge_count = gr.Number(rounds.JUDGE_PROMPTS, precision=0, minimum=1, maximum=64,
                                    label="Prompts (at most)", elem_id="judge-count", scale=1)
            judge_button = gr.Button("Judge against parent", elem_id="judge-parent", scale=1)
        judge_status = gr.Markdown("The judge: both the run and its parent answer a few prompts "
                                   f"({rounds.JUDGE_TOKENS} new tokens, greedy), a reward model scores the replies, "
                                   "and the share the run wins estimates its win-rate before anyone votes.",
                                   elem_id="judge-status")
        with gr.Row():
            round_run = gr.Dropdown(rated_runs(), value=None, label="Start the next round from this rated model",
                                    elem_id="round-run", scale=2, allow_custom_value=True)
            round_method = gr.Radio([("DPO (pairs from votes and written answers)", "dpo"),
                                     ("KTO (thumbs and votes)", "kto"),
                                     ("Reward model from the votes, then GRPO against it", "reward-rl")],
                                    value="dpo", label="Method",
                                    elem_id="round-method", scale=2)
            round_steps = gr.Number(0, precision=0, minimum=0, label="Max steps (0: planned from the data)", elem_id="round-steps",
                                    scale=1)
            start_round = gr.Button("Start next round", variant="primary", elem_id="start-round", scale=1)
        round_status = gr.Markdown("", elem_id="round-status")

    with gr.Accordion("Ratings", open=True):
        with gr.Row():
            model_filter = gr.Dropdown([("all", "")], value="", label="Model", elem_id="filter-model",
                                       allow_custom_value=True)
            source_filter = gr.Dropdown(SOURCE_CHOICES, value="", label="Source", elem_id="filter-source")
            round_filter = gr.Dropdown([("all", ""), ("not used by a round yet", UNUSED)], value="",
                                       label="Round (built from)", elem_id="filter-round", allow_custom_value=True)
            rater_filter = gr.Dropdown([("all", "")], value="", label="Rater", elem_id="filter-rater",
                                       allow_custom_value=True)
            kind_filter = gr.Dropdown(KIND_CHOICES, value="", label="Kind", elem_id="filter-kind")
        table = gr.Dataframe(headers=RATING_COLUMNS, interactive=False, wrap=True, elem_id="ratings-table",
                             max_height=420)
        with gr.Row():
            delete_id = gr.Number(None, precision=0, label="Rating id (click a row)", elem_id="delete-id", scale=1)
            delete_reason = gr.Textbox(label="Why (kept in the audit table)", elem_id="delete-reason", scale=3)
            delete = gr.Button("Delete rating", variant="stop", elem_id="delete-rating", scale=1)

    with gr.Accordion("Export and import", open=False):
        with gr.Row():
            export_kind = gr.Radio(EXPORT_CHOICES, value="dpo", label="Export as", elem_id="export-kind", scale=3)
            export_button = gr.Button("Export", elem_id="export", scale=1)
        export_file = gr.File(label="JSONL file", interactive=False, elem_id="export-file")
        export_status = gr.Markdown("", elem_id="export-status")
        with gr.Row():
            import_files = gr.File(label="Ratings to import: Chatbot Arena / FastChat battle JSONL, or an ftchat "
                                         "ratings export", file_count="multiple", file_types=[".jsonl", ".json"],
                                   elem_id="import-files", scale=3)
            import_button = gr.Button("Import", elem_id="import", scale=1)
        import_status = gr.Markdown("", elem_id="import-status")

    # -- ratings --------------------------------------------------------------------------------------------------
    def rating_rows(model: str = "", source: str = "", rater: str = "", kind: str = "", round_: str = "") -> list[list]:
        """The live ratings matching the filters (empty: any), newest first, as table rows. `round_`: a round's run
        name (the ratings it was built from) or '-' (those no round has used yet)."""
        try:
            found = ctx.feedback().ratings(model=model or None, source=source or None, rater=rater or None,
                                           kind=kind or None, round=round_ or None)
        except FeedbackError as exc:
            raise gr.Error(str(exc)) from None
        out = []
        for r in reversed(found):
            if r["kind"] == "vote":
                outcome, other = OUTCOME[r["winner"]], r["reply_b"]
            elif r["kind"] == "thumb":
                outcome, other = ("thumbs up" if r["thumb"] == 1 else "thumbs down"), ""
            else:
                outcome, other = "better answer written", r["edit"]
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["time"]))
            out.append([r["id"], when, r["kind"], r["rater"] or "", outcome, short(r["model_a"]), short(r["model_b"]),
                        clip(r["prompt"], 80), clip(r["reply_a"], 80),
                        clip(other, 80), "yes" if r["anonymous"] else "", r["source"]])
        return out

    def counts_text() -> str:
        c = ctx.feedback().counts()
        kinds, thumbs = c["kinds"], c["thumbs"]
        text = (f"**{plural(c['total'], 'rating')}**: {plural(kinds['vote'], 'vote')} · "
                f"{plural(kinds['thumb'], 'thumb')} ({thumbs['up']} up / {thumbs['down']} down) · "
                f"{plural(kinds['edit'], 'written answer')}")
        if c["deleted"]:
            text += f" · {c['deleted']} deleted"
        return text

    def filters_and_table(model: str = "", source: str = "", rater: str = "", kind: str = "", round_: str = ""):
        """Counts, the filter choices and the filtered ratings table."""
        store = ctx.feedback()
        models = [("all", "")] + [(short(m), m) for m in store.models()]
        raters = [("all", "")] + [(r, r) for r in store.counts()["raters"]]
        used = store.rounds_used()
        unused = store.unused_count()  # a COUNT, not every row: this runs on each filter change
        round_choices = [("all", ""), (f"not used by a round yet ({unused})", UNUSED)] + \
            [(f"{name} ({plural(n, 'rating')})", name) for name, n in used]
        return (counts_text(), gr.Dropdown(choices=models, value=model), gr.Dropdown(choices=raters, value=rater),
                gr.Dropdown(choices=round_choices, value=round_), rating_rows(model, source, rater, kind, round_))

    def pick_row(data, event: gr.SelectData):
        row = event.row_value if event.row_value else None
        return row[0] if row else None

    def delete_rating(rating_id: float | None, reason: str, model: str = "", source: str = "", rater: str = "",
                      kind: str = "", round_: str = ""):
        """Delete a rating: exports and the leaderboard leave it out; the row and the reason stay in the audit."""
        if rating_id is None:
            raise gr.Error("Give the id of the rating to delete (click its row in the table).")
        try:
            ctx.feedback().delete(int(rating_id), reason=reason or None)
        except FeedbackError as exc:
            raise gr.Error(str(exc)) from None
        return (None, "", *filters_and_table(model, source, rater, kind, round_))

    # -- leaderboard ------------------------------------------------------------------------------------------------
    def board_view(only_anonymous: bool = False, without_flagged: bool = False):
        """Leaderboard rows (rank, model, rating, 95% CI, votes), the chart, and the win-rate matrix; optionally from
        the blind votes only, or without the votes of the raters the Raters section flags."""
        votes = ctx.feedback().ratings(kind="vote")
        ratings = leaderboard.bradley_terry(votes, anonymous_only=bool(only_anonymous),
                                            exclude_flagged=bool(without_flagged))
        rows = [[r.rank, short(r.model), round(r.rating), f"{r.ci_low:.0f} – {r.ci_high:.0f}", r.votes]
                for r in ratings]
        chart_rows = [{**r.to_dict(), "model": short(r.model)} for r in ratings]
        title = "Rating with 95% interval" + (" (blind votes only)" if only_anonymous else "") + \
            (" (without flagged raters)" if without_flagged else "")
        chosen = leaderboard.votes_of(votes, anonymous_only=bool(only_anonymous), exclude_flagged=bool(without_flagged))
        wins = leaderboard.win_matrix(chosen)
        if wins.empty:
            table = [["no votes yet"]]
            headers = ["model"]
        else:
            headers = ["model ↓ vs →"] + [short(c) for c in wins.columns]
            table = [[short(name)] + ["" if v != v else f"{v:.0%}" for v in row]
                     for name, row in zip(wins.index, wins.values.tolist())]
        return rows, interval_chart(chart_rows, title), gr.Dataframe(value=table, headers=headers)

    # -- raters ---------------------------------------------------------------------------------------------------
    def team_view():
        """The raters' summary line, the per-rater table and the per-pair agreement table."""
        team = agreement.team_agreement(ctx.feedback().ratings())
        if not team.raters:
            return "No rating carries a rater's name yet (behind `--users` each carries its login).", [], []

        def number(value, form="{:.2f}"):
            return "—" if value is None else form.format(value)

        rows = [[r.rater, r.votes, r.thumbs, r.edits, number(r.left_share, "{:.0%}"), r.shared_items,
                 number(r.agreement_with_others, "{:.0%}"), number(r.others_agreement, "{:.0%}"),
                 number(r.kappa_with_others), "; ".join(r.flags)] for r in team.raters]
        pairs = [[p.rater_a, p.rater_b, p.shared, f"{p.agreement:.0%}", number(p.kappa)] for p in team.pairs]
        flagged = [r.rater for r in team.raters if r.flags]
        text = (f"**{plural(len(team.raters), 'rater')}**; {plural(team.items_shared, 'prompt')} voted on by two or "
                f"more. Team agreement (Fleiss' kappa): **{number(team.fleiss_kappa)}**")
        if team.fleiss_kappa is None:
            text += " (needs prompts that two raters voted on)"
        if flagged:
            text += f". ⚠ Check: {', '.join(flagged)}"
        return text + ".", rows, pairs

    def raters_summary() -> dict:
        """Per-rater counts, left-pane share, agreement with the others and flags; agreement per pair and overall."""
        return agreement.team_agreement(ctx.feedback().ratings()).to_dict()

    # -- rating tasks ---------------------------------------------------------------------------------------------
    def create_task(name: str, typed: str, file: str | None, models: list[str], raters: list[str] | None,
                    overlap: float = tasks.DEFAULT_OVERLAP):
        """Share out prompts (typed one per line, else a file's) among raters (none named: every rater of the
        users file) for two models, or a pair of several drawn per prompt; `overlap` of them go to two raters.
        Returns a message and the task picker showing the new task."""
        try:
            if typed and typed.strip():
                prompts, source = prompt_queue_text(typed), "typed prompts"
            elif file:
                prompts, source = prompts_from_file(file), Path(file).stem
            else:
                raise gr.Error("Type the prompts, one per line, or choose a file of them.")
            if ctx.users is not None:
                chosen = tasks.task_raters(list(raters or []), ctx.users.read(), ctx.users.where, ctx.users.option)
            else:
                chosen = tasks.task_raters(list(raters or []), {})
            task = tasks.create_task(ctx.feedback(), (name or "").strip() or source, prompts, list(models or []),
                                     chosen, float(overlap), created_by=logged_in())
        except (PromptError, tasks.TaskError, FeedbackError) as exc:  # FeedbackError: a team database not reached
            raise gr.Error(str(exc)) from None
        counts = tasks.progress(ctx.feedback().task_items(task["id"]))
        text = (f"✓ task **{task['name']}**: {plural(len(prompts), 'prompt')} for "
                + ", ".join(f"{name} ({n})" for name, (_, n) in sorted(counts.items())) + ".")
        return text, gr.Dropdown(choices=task_choices(), value=task["name"])

    def task_view(name: str | None):
        """A task's summary (progress, agreement on the overlap prompts, raters to check) and its per-rater table."""
        if not name:
            return ("No task picked." if task_choices() else "No rating task yet: create one above."), []
        store = ctx.feedback()
        try:
            task = store.task(name)
        except FeedbackError as exc:
            raise gr.Error(str(exc)) from None
        report = tasks.task_report(task, store.task_items(task["id"]), store.task_votes(task["id"]))

        def share(value):
            return "—" if value is None else f"{value:.0%}"

        rows = [[r["rater"], r["done"], r["assigned"], share(r["done"] / r["assigned"] if r["assigned"] else None),
                 r["overlap_items"], r["votes"], share(r["left_share"]), share(r["agreement_with_others"]),
                 "—" if r["kappa_with_others"] is None else f"{r['kappa_with_others']:.2f}", "; ".join(r["flags"])]
                for r in report["raters"]]
        return tasks.describe_task(report), rows

    def task_refresh(name: str | None):
        values = [v for _, v in task_choices()]
        name = name if name in values else (values[-1] if values else None)
        return (gr.Dropdown(choices=task_choices(), value=name), *task_view(name), gr.Dropdown(choices=model_choices()),
                gr.Dropdown(choices=rater_choices()))

    # -- lineage and rounds -----------------------------------------------------------------------------------------
    def lineage_html(run: str | None) -> str:
        """The chain base → … → run, each step with its win-rate against its parent from the votes so far."""
        if not run:
            return "<div class='lineage-empty'>Pick a run to see where it comes from.</div>"
        run_dir = ctx.workspace.run_dir(run)
        if run_dir is None:
            raise gr.Error(f"{run}: no such run in this workspace.")
        steps = rounds.lineage_win_rates(ctx.feedback(), ctx.workspace.runs_dir, str(run_dir))
        boxes = []
        for i, step in enumerate(steps):
            name = step["model"]
            match = rounds.ROUND_NAME.match(name)
            kind = "base" if is_base(name) else ("round" if match else "run")
            if i == 0:
                detail = "the base model"
            else:
                detail = "<div class='lineage-votes'>" + (
                    f"votes: wins <b>{step['win_rate']:.0%}</b> against its parent ({plural(step['votes'], 'vote')})"
                    if step["votes"] else "votes: none against its parent yet") + "</div>"
                detail += judged_html(step["judged"])
            label = "base" if i == 0 else (f"round {match['n']}" if match else "fine-tune")
            boxes.append(f"<div class='lineage-step lineage-{kind}'><div class='lineage-kind'>{label}</div>"
                         f"<div class='lineage-name'>{html.escape(short(name))}</div>"
                         f"<div class='lineage-detail'>{detail}</div></div>")
        return "<div class='lineage-chain'>" + "<div class='lineage-arrow'>→</div>".join(boxes) + "</div>"

    def report_markdown(run: str | None) -> str:
        """The round report of the lineage's run (Markdown), or what to pick first."""
        if not run:
            return "Pick a run above to see whether it helped."
        try:
            return describe_report(round_report(ctx.feedback(), ctx.workspace.root, run))
        except ReportError as exc:
            return f"⚠ {exc}"

    def prompts_to_rate(run: str | None):
        """The report's prompts to rate next (one per line, for the Chat tab's queue) and the pair to rate them on:
        the run on the right, its parent on the left."""
        if not run:
            raise gr.Error("Pick a run above first.")
        report = round_report(ctx.feedback(), ctx.workspace.root, run)
        if not report["rate_next"]:
            raise gr.Error(f"{report['run']} has no regressions and no judged prompts yet: judge it or rate it first.")
        run_dir = ctx.workspace.run_dir(run)
        parent = report["parent"] or ""
        parent_choice = parent if is_base(parent) else str(ctx.workspace.runs_dir / parent)
        gr.Info(f"{len(report['rate_next'])} prompts are in the Chat tab's queue: press ▶ Next prompt there.")
        return "\n".join(" ".join(p.split()) for p in report["rate_next"]), (parent_choice, str(run_dir))

    def judged_html(judged: dict | None) -> str:
        """The reward model's judgement of a step against its parent, as one line of the lineage."""
        if not judged:
            return "<div class='lineage-judged'>judged: not yet</div>"
        judge_name = html.escape(Path(judged.get("reward", "")).name)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(judged["time"])) if judged.get("time") else "?"
        title = (f"{judged['wins']} wins, {judged['ties']} ties, {judged['losses']} losses on {judged['n']} prompts; "
                 f"95% bootstrap interval; {judged.get('max_new_tokens', '?')} new tokens; judged {when}")
        return (f"<div class='lineage-judged' title='{html.escape(title)}'>judged: <b>{judged['win_rate']:.0%}</b> "
                f"[{judged['ci_low']:.0%}–{judged['ci_high']:.0%}] by {judge_name} "
                f"({plural(judged['n'], 'prompt')})</div>")

    def judge_default(run: str | None, picked: str | None = None):
        """The reward-model picker: the person's pick while it exists, else the newest reward model the run was not
        trained against."""
        choices = judge_choices()
        values = [v for _, v in choices]
        if picked not in values:
            run_dir = ctx.workspace.run_dir(run) if run else None
            fair = rounds.fair_judge(run_dir, reward_runs(ctx.workspace.runs_dir)) if run_dir else None
            picked = fair.name if fair is not None else (values[0] if values else None)
        return gr.Dropdown(choices=choices, value=picked)

    def judge_parent(run: str | None, reward: str | None, source: str = "held_out", count: float | None = None,
                     progress=gr.Progress()):
        """The reward model judges the run against its parent on a few prompts; the judgement is kept in the run's
        folder. Returns a message and the redrawn lineage."""

        if not run:
            raise gr.Error("Pick a run under 'Lineage of the run' first.")
        run_dir = ctx.workspace.run_dir(run)
        if run_dir is None:
            raise gr.Error(f"{run}: no such run in this workspace.")
        reward_dir = ctx.workspace.run_dir(reward) if reward else None
        if reward_dir is None:
            raise gr.Error("Pick a reward model to judge with (train one in 2. Train with the method 'Reward "
                           "model', or with a reward-RL round)." if not reward else
                           f"{reward}: no such run in this workspace.")
        limit = int(count) if count else rounds.JUDGE_PROMPTS
        try:
            progress(0, desc=f"loading the reward model {reward_dir.name}")
            rm = ctx.reward_model(reward_dir)
            judged = rounds.judge_against_parent(ctx.workspace.root, str(run_dir), reward_dir, source or "held_out",
                                                 limit, engine=ctx.engine(), reward_model=rm,
                                                 progress=lambda fraction, text: progress(fraction, desc=text),
                                                 feedback_db=ctx.feedback_db)
        except (rounds.RoundError, RewardModelError, ChatError, ModelError) as exc:
            raise gr.Error(str(exc)) from None
        parent = short(judged["against"]) if is_base(judged["against"]) else Path(judged["against"]).name
        text = (f"✓ judged **{run_dir.name}** against {parent}: wins **{judged['win_rate']:.0%}** "
                f"[{judged['ci_low']:.0%}–{judged['ci_high']:.0%}] of {plural(judged['n'], 'prompt')} "
                f"({judged['wins']} wins, {judged['ties']} ties, {judged['losses']} losses) by {reward_dir.name}.")
        if judged["n"] < limit:
            text += f" That is all of {rounds.JUDGE_SOURCES[source or 'held_out']}."
        if judged["n"] < rounds.FEW_JUDGED:
            text += f" ⚠ Under {rounds.FEW_JUDGED} prompts the interval is rough: read it as a hint."
        if rounds.trained_against(run_dir, reward_dir):
            text += " ⚠ The run was trained against this reward model, which therefore favours it."
        return text, lineage_html(run)

    def round_readiness(run: str | None, method: str = "dpo", without_flagged: bool = False) -> str:
        """Whether the ratings of `run` (without the flagged raters', when asked) are enough for a round of `method`,
        and how many more it needs if not."""
        if not run:
            return "Pick a rated model to start a round from."
        if method == "reward-rl":
            missing, pairs, prompts = rounds.readiness(ctx.feedback(), run, bool(without_flagged))
            if missing:
                return f"Not yet: {missing}"
            return (f"Ready: {plural(pairs, 'pair')} from all votes train the reward model; **{short(run)}** then "
                    f"practises on its {plural(prompts, 'rated prompt')} with GRPO. GRPO strengthens what the model "
                    "already writes now and then; a habit it never shows (a sign-off, a new format) is taught by DPO "
                    "or KTO.")
        rows = agreement.without_raters(ctx.feedback().ratings(model=run),
                                        rounds.leave_out(ctx.feedback(), bool(without_flagged)))
        have = len(rounds.training_rows(method, rows))
        needed = rounds.min_ratings_needed(method, rows)
        what = "pairs" if method == "dpo" else "rows"
        least = rounds.MIN_DPO_PAIRS if method == "dpo" else rounds.MIN_KTO_ROWS
        # a round trains on every rating of its model, so a second round from the same model meets the first's again
        earlier = ctx.feedback().rounds_of(rounds.used_ids(method, rows))
        again = (" " + "; ".join(f"{n} of its ratings already trained **{short(name)}**" for name, n in earlier)
                 + ": this round trains on them again." if earlier else "")
        if needed:
            return (f"Not yet: the ratings of **{short(run)}** give {have} {method.upper()} {what}; "
                    f"**need {needed} more ratings** ({least} {what} in all).{again}")
        return f"Ready: the ratings of **{short(run)}** give {have} {method.upper()} {what}.{again}"

    def start_next_round(run: str | None, method: str = "dpo", max_steps: float | None = 0,
                         without_flagged: bool = False):
        """Train the next round of a rated model from its ratings (parent: that model; `without_flagged`: leaving
        out the flagged raters' ratings); returns the new run folder and a message. Too few ratings: no run, and the
        message says how many more are needed."""
        if not run:
            raise gr.Error("Pick the rated model to start the round from.")
        flags = {"max_steps": int(max_steps)} if max_steps else {}
        if method == "reward-rl":
            return start_reward_rl_round(run, flags, bool(without_flagged))
        try:
            config = rounds.next_round_config(ctx.workspace.root, run, method, bool(without_flagged),
                                              feedback_db=ctx.feedback_db, **flags)
        except rounds.RoundError as exc:
            return "", f"⚠ {exc}"
        except (ValueError, OSError) as exc:
            raise gr.Error(str(exc)) from None
        runs.launch(config)
        name = Path(config.out).name
        return config.out, (f"✓ started **{name}**: {method.upper()} on the ratings of {short(run)} "
                            f"({Path(config.data[0]).name}), parent {short(run)}. Watch it in **2. Train**; when it "
                            "is done it appears in **3. Chat**, paired against its parent.")

    def start_reward_rl_round(run: str, flags: dict, without_flagged: bool = False):
        """A reward model on every vote, then GRPO from `run` on its rated prompts against it: two runs, one after
        the other (the second waits, queued, for the first)."""
        try:
            reward_config, policy_config = rounds.reward_rl_round(ctx.workspace.root, run, "grpo", without_flagged,
                                                                  feedback_db=ctx.feedback_db, **flags)
        except rounds.RoundError as exc:
            return "", f"⚠ {exc}"
        except (ValueError, OSError) as exc:
            raise gr.Error(str(exc)) from None
        runs.launch_chain([reward_config, policy_config])
        rm, policy = Path(reward_config.out).name, Path(policy_config.out).name
        return policy_config.out, (
            f"✓ started **{rm}**: a reward model on the votes ({Path(reward_config.data[0]).name}); then **{policy}**: "
            f"GRPO from {short(run)} against it (queued until the reward model is done). Watch both in **2. Train**: "
            "the reward model's held-out accuracy, then the policy's mean reward per step.")

    # -- export / import --------------------------------------------------------------------------------------------
    def export_ratings(kind: str, model: str = ""):
        """Write the (model-filtered) ratings as `kind` training data: a JSONL file to download and a `datasets`
        folder next to it; the file is checked as any upload is."""
        try:
            path, n, folder = export.export_ratings(ctx.feedback().ratings(model=model or None), kind,
                                                    ctx.workspace.root / "exports")
        except export.RatingsExportError as exc:
            raise gr.Error(str(exc)) from None
        text = f"✓ {plural(n, 'row')} → `{path}`"
        if folder is not None:
            text += f"; `datasets` folder: `{folder}`"
            report = ctx.report(path)
            text += (f". Checked as an upload: {report.shape}, {report.loaded.examples} usable examples"
                     if report.ok else f". ⚠ the data check says: {report.loaded.error}")
        return str(path), text

    def import_ratings(files: list[str] | None):
        """Add ratings from battle JSONL (Chatbot Arena / FastChat) or ftchat ratings exports."""
        if not files:
            raise gr.Error("Choose one or more files to import.")
        lines = []
        for file in files:
            report = import_file(ctx.feedback(), file)
            lines.append(("✓ " if report.ok else "⚠ ") + report.summary().replace(str(file), Path(file).name))
            lines += [f"  - {problem}" for problem in report.problems[:5]]
        return "\n".join(lines)

    # -- wiring ---------------------------------------------------------------------------------------------------
    filters = [model_filter, source_filter, rater_filter, kind_filter, round_filter]
    table_outputs = [counts, model_filter, rater_filter, round_filter, table]
    board_outputs = [board, chart, matrix]

    def refresh_all(model, source, rater, kind, round_, only_anonymous, run, round_from, method, without_flagged=False,
                    task=None, round_from_picked=False):
        """Everything the tab shows, fresh from the store and the run folders. The next round starts from the newest
        rated run (round after round: the one just rated) unless the person picked its source on this page."""
        run_values = [v for _, v in lineage_choices()]
        run = run if run in run_values else (run_values[0] if run_values else None)
        rated = rated_runs()
        kept = round_from_picked and round_from in [v for _, v in rated]
        round_from = round_from if kept else (rated[0][1] if rated else None)
        return (*filters_and_table(model, source, rater, kind, round_), *board_view(only_anonymous, without_flagged),
                gr.Dropdown(choices=lineage_choices(), value=run), lineage_html(run),
                gr.Dropdown(choices=rated, value=round_from), round_readiness(round_from, method, without_flagged),
                *task_refresh(task), *team_view())

    round_from_picked = gr.State(False)
    round_run.input(lambda: True, outputs=[round_from_picked], api_visibility="private", show_progress="hidden")
    everything_in = [*filters, anonymous_only, lineage_run, round_run, round_method, exclude_flagged, task_pick,
                     round_from_picked]
    task_out = [task_pick, task_summary, task_table, task_models, task_raters]
    everything_out = [*table_outputs, *board_outputs, lineage_run, lineage_view, round_run, round_status, *task_out,
                      team_summary, rater_table, pair_table]
    refresh.click(refresh_all, inputs=everything_in, outputs=everything_out, api_name="refresh_feedback")
    page.select(refresh_all, inputs=everything_in, outputs=everything_out, api_visibility="private")
    for box in filters:
        box.change(filters_and_table, inputs=filters, outputs=table_outputs, api_visibility="private")
    gr.api(rating_rows, api_name="ratings")
    gr.api(raters_summary, api_name="raters")
    table.select(pick_row, inputs=[table], outputs=[delete_id], api_visibility="private")
    delete.click(delete_rating, inputs=[delete_id, delete_reason, *filters],
                 outputs=[delete_id, delete_reason, *table_outputs], api_name="delete_rating")
    anonymous_only.change(board_view, inputs=[anonymous_only, exclude_flagged], outputs=board_outputs,
                          api_name="leaderboard")
    exclude_flagged.change(board_view, inputs=[anonymous_only, exclude_flagged], outputs=board_outputs,
                           api_visibility="private")
    create_task_button.click(create_task, inputs=[task_name, task_text, task_file, task_models, task_raters,
                                                  task_overlap],
                             outputs=[task_status_line, task_pick], api_name="create_task") \
        .success(task_view, inputs=[task_pick], outputs=[task_summary, task_table], api_visibility="private")
    task_pick.input(task_view, inputs=[task_pick], outputs=[task_summary, task_table], api_name="task_status")
    lineage_run.change(lineage_html, inputs=[lineage_run], outputs=[lineage_view], api_name="lineage")
    lineage_run.change(report_markdown, inputs=[lineage_run], outputs=[report_view], api_visibility="private")
    report_button.click(report_markdown, inputs=[lineage_run], outputs=[report_view], api_name="round_report")
    rate_next_event = rate_next.click(prompts_to_rate, inputs=[lineage_run],
                                      outputs=[next_prompts, next_pair],
                                      api_name="rate_next")
    lineage_run.change(judge_default, inputs=[lineage_run], outputs=[judge_reward], api_visibility="private")
    judge_button.click(judge_parent, inputs=[lineage_run, judge_reward, judge_source, judge_count],
                       outputs=[judge_status, lineage_view], api_name="judge_parent")
    for trigger in (refresh.click, page.select, demo.load):
        trigger(judge_default, inputs=[lineage_run, judge_reward], outputs=[judge_reward], api_visibility="private")
    round_run.change(round_readiness, inputs=[round_run, round_method, exclude_flagged], outputs=[round_status],
                     api_name="round_readiness")
    exclude_flagged.change(round_readiness, inputs=[round_run, round_method, exclude_flagged], outputs=[round_status],
                           api_visibility="private")
    round_method.change(round_readiness, inputs=[round_run, round_method, exclude_flagged], outputs=[round_status],
                        api_visibility="private")
    start_round.click(start_next_round, inputs=[round_run, round_method, round_steps, exclude_flagged],
                      outputs=[gr.Textbox(visible=False), round_status], api_name="start_round")
    export_button.click(export_ratings, inputs=[export_kind, model_filter], outputs=[export_file, export_status],
                        api_name="export_ratings")
    import_button.click(import_ratings, inputs=[import_files], outputs=[import_status], api_name="import_ratings") \
        .then(refresh_all, inputs=everything_in, outputs=everything_out, api_visibility="private")
    demo.load(refresh_all, inputs=everything_in, outputs=everything_out, api_visibility="private")
    return FeedbackTab(refresh, rate_next_event, next_prompts, next_pair)
