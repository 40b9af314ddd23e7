"""Train tab: pick base, data, method and technique; start `python -m ftchat train` as a subprocess and watch it.

The UI never trains in its own process: it writes the run config through ftchat.runs.launch and reads the run
folder's status.json and metrics.jsonl on a timer. A run started while another trains waits its turn in the
workspace's queue (ftchat.run_queue); the picker, the table and the progress say its place.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ftchat import methods, run_queue, runs
from ftchat.config import ADAPTERS, PLANNED, ConfigError, RunConfig, value_type
from ftchat.models import DEFAULT_BASE
from ftchat.train.compare import read_comparison
from ftchat.train.form import config_from_form, plan_for_form
from ftchat.ui.context import AppContext, data_shapes, methods_for, unusable_reason, upload_choices

POLL_SECONDS = 1.5
LOG_LINES = 12
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ADAPTER_LABELS = {"qlora": "QLoRA (4-bit base + LoRA)", "lora": "LoRA", "full": "Full fine-tune",
                  "layers": "Layer-wise (last layers only)", "prompt": "Prompt tuning"}
SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup"]
FORM_PRECISIONS = ["auto", "bf16", "fp32"]
# Knobs shown in the Advanced accordion, in this order, when RunConfig has them: (field, label, info).
ADVANCED = [
    ("grad_accum", "Gradient accumulation", "steps per optimizer update"),
    ("warmup_ratio", "Warmup ratio", None),
    ("scheduler", "LR scheduler", None),
    ("weight_decay", "Weight decay", None),
    ("seed", "Seed", None),
    ("precision", "Precision", "auto: 4-bit for QLoRA (on a CPU only for bases of 1B parameters and more); bf16 on GPU / fp32 on CPU for LoRA; fp32 weights for full "
                               "and layer-wise; bf16 matmuls on a GPU and on a CPU with native bf16"),
    ("lora_alpha", "LoRA alpha", None),
    ("lora_dropout", "LoRA dropout", None),
    ("lora_targets", "LoRA target modules", "all-linear, or a comma list such as q_proj,v_proj"),
    ("train_layers", "Layer-wise: last N layers", None),
    ("prompt_tokens", "Prompt tuning: virtual tokens", None),
    ("beta", "DPO / KTO beta", "how strongly the model is held near the base"),
    ("eval_split", "Eval split", "fraction held out for the eval loss"),
    ("eval_steps", "Eval every N steps", None),
    ("early_stopping", "Early stopping patience", "evals without improvement"),
    ("replay", "Replay ratio", "base-model answers mixed in per example, against forgetting (SFT)"),
    ("chunk_tokens", "Document chunk tokens", None),
    ("compare_prompts", "Comparison prompts", "held-out and general prompts answered by base and tuned model"),
    ("gradient_checkpointing", "Gradient checkpointing", "saves memory on big models, costs time"),
]
RUN_COLUMNS = ["run", "status", "base", "method", "data", "steps", "first loss", "final loss", "eval loss", "parent",
               "error"]


@dataclass
class TrainTab:
    base: gr.Dropdown
    datasets: gr.Dropdown
    run: gr.Dropdown
    runs_table: gr.Dataframe
    refresh_choices: object  # (paths) -> update of the data picker, selecting paths


# -- choices -----------------------------------------------------------------------------------------------------

def state_text(run, places: dict) -> str:
    """A run's state as a person reads it; a queued run's with its place: "queued · 2nd, starts after b (≈ 4 min)"."""
    place = places.get(run.name) if run.state == "queued" else None
    return place.describe() if place else run.state


def run_state_choices(ctx: AppContext) -> list[tuple[str, str]]:
    places = run_queue.places(ctx.workspace.runs_dir)
    return [(f"{r.name} · {state_text(r, places)}", str(r.path)) for r in runs.list_runs(ctx.workspace.runs_dir)]


def finished_run_choices(ctx: AppContext) -> list[tuple[str, str]]:
    return [("none (start from the base)", "")] + [
        (r.name, str(r.path)) for r in runs.list_runs(ctx.workspace.runs_dir) if r.state == "done"
    ]


def fmt_loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def runs_frame(ctx: AppContext):
    import pandas as pd

    rows = []
    places = run_queue.places(ctx.workspace.runs_dir)
    for r in runs.list_runs(ctx.workspace.runs_dir):
        cfg, summary = r.config, r.summary
        data = ", ".join(ctx.workspace.stored_file(Path(p)).original_name for p in cfg.get("data") or [])
        parent = Path(r.parent).name if r.parent else ""
        rows.append([
            r.name, state_text(r, places), ctx.workspace.base_label(cfg.get("base")),
            f"{cfg.get('method', '?')}/{cfg.get('adapter', '?')}" if cfg else "", data,
            summary.get("steps", r.status.get("step", "")), fmt_loss(summary.get("first_loss")),
            fmt_loss(summary.get("final_loss")), fmt_loss(summary.get("eval_loss")), parent,
            (r.error or "")[:200],
        ])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


# -- run status --------------------------------------------------------------------------------------------------

def fmt_duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def progress_html(info, metrics: list[dict], place=None) -> str:
    """The run's progress line; a queued run's `place` (ftchat.run_queue.Place) gives its place and an ETA that
    includes the wait."""
    status = info.status
    state = info.state
    last = metrics[-1] if metrics else {}
    step = status.get("step", last.get("step", 0)) or 0
    total = status.get("max_steps") or last.get("max_steps") or 0
    started = status.get("started")
    if state in ("queued", "running") and started:
        elapsed = time.time() - started
    else:
        elapsed = info.summary.get("runtime_s") or last.get("elapsed_s")
    eta = None
    if state == "running" and step and total:
        eta = last.get("eta_s")
        if eta is not None and last.get("elapsed_s") is not None and started:
            eta = max(0.0, eta - max(0.0, (time.time() - started) - last["elapsed_s"]))
    if state == "queued" and place is not None and place.wait_s is not None and place.est_s is not None:
        eta = place.wait_s + place.est_s
    percent = 100 if state == "done" else (100 * step / total if total else 0)
    phase = status.get("phase")
    phase_text = f" · {phase}" if phase and state == "running" else ""
    colour = {"done": "#16a34a", "failed": "#dc2626", "cancelled": "#6b7280"}.get(state, "#4f46e5")
    error = ""
    if state == "failed":
        error = f"<div class='run-error'><b>Error:</b> {escape(info.error or 'see the log below')}</div>"
    skipped = status.get("skipped_rows") or []
    if skipped:
        total_skipped = info.summary.get("skipped", len(skipped))
        listing = "; ".join(f"{escape(r.get('file', ''))} line {r.get('line')}: {escape(r.get('reason', ''))}"
                            for r in skipped[:3])
        more = f" and {total_skipped - 3} more" if total_skipped > 3 else ""
        error += (f"<div class='run-skipped' style='margin-top:6px'>⚠️ <b>{total_skipped} row"
                  f"{'s' if total_skipped != 1 else ''} left out of training</b>: {listing}{more}</div>")
    return (
        f"<div class='run-progress' data-state='{state}'>"
        f"<div><b>{escape(info.name)}</b> · <span style='color:{colour}'><b>{state}</b></span>{phase_text}"
        f"{escape(place.describe().removeprefix('queued')) if state == 'queued' and place else ''}"
        f" · step <b>{step}</b> / {total or '?'} · elapsed {fmt_duration(elapsed)} · ETA {fmt_duration(eta)}</div>"
        f"<div class='bar'><div style='width:{percent:.0f}%;background:{colour}'></div></div>{error}</div>"
    )


def escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# What the two plots draw: metrics.jsonl key -> the series' name in the legend.
LOSS_SERIES = {"loss": "train loss", "eval_loss": "eval loss"}
SCORE_SERIES = {"reward": "mean reward", "rewards_margins": "reward margin", "rewards_accuracies": "reward accuracy",
                "eval_accuracy": "eval accuracy", "eval_margin": "eval margin", "kl": "KL"}


def series_frame(metrics: list[dict], series: dict[str, str], value: str):
    """Long-format rows (step, value, series) with numeric dtypes even when empty: the browser picks a plot's axes
    from the dtypes, and an untyped empty frame at the start of a run made it draw the losses as category labels."""
    import math

    import pandas as pd

    rows = [(int(m["step"]), float(m[key]), label) for m in metrics if isinstance(m.get("step"), (int, float))
            for key, label in series.items()
            if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]
    frame = pd.DataFrame(rows, columns=["step", value, "series"])
    return frame.astype({"step": "int64", value: "float64", "series": "object"})


def plot_update(frame, **extra):
    """A plot update that redraws the plot. The browser fixes a plot's colour scale to the series present when it
    was drawn (an eval loss arriving later stayed invisible); setting the legend's entries makes it draw anew."""
    return gr.LinePlot(value=frame, colors_in_legend=list(frame["series"].unique()), **extra)


def loss_frame(metrics: list[dict]):
    return series_frame(metrics, LOSS_SERIES, "loss")


def score_frame(metrics: list[dict]):
    return series_frame(metrics, SCORE_SERIES, "value")


def comparison_frame(run_dir: Path):
    import pandas as pd


    rows = read_comparison(run_dir)
    if rows is None:
        return None
    return pd.DataFrame(
        [[r.get("kind", ""), r.get("prompt", ""), answer_text(r.get("base")), answer_text(r.get("tuned"))]
         for r in rows],
        columns=["kind", "prompt", "base model", "tuned model"],
    )


def answer_text(answer) -> str:
    text = str(answer or "").strip()
    return text or "(no text: only whitespace)"


def status_json(info, metrics: list[dict]) -> dict:
    last = metrics[-1] if metrics else {}
    return {
        "run": str(info.path), "name": info.name, "state": info.state, "phase": info.status.get("phase"),
        "step": info.status.get("step", last.get("step")), "max_steps": info.status.get("max_steps"),
        "loss": last.get("loss"), "eval_loss": next((m["eval_loss"] for m in reversed(metrics)
                                                     if m.get("eval_loss") is not None), None),
        "elapsed_s": last.get("elapsed_s"), "eta_s": last.get("eta_s"), "error": info.error,
        "summary": info.summary, "comparison": (info.path / "comparison.json").exists(),
    }


# -- the tab -----------------------------------------------------------------------------------------------------

def knob(name: str, label: str, info: str | None, default):
    if name in PLANNED:  # empty: ftchat.train.plan plans it from the data
        return gr.Number(value=None, label=label, info=f"{info + '; ' if info else ''}0 or empty: planned from the data",
                         precision=0 if value_type(name) is int else None, minimum=0)
    if name == "scheduler":
        return gr.Dropdown(SCHEDULERS, value=default, label=label, info=info, allow_custom_value=True)
    if name == "precision":
        return gr.Dropdown(FORM_PRECISIONS, value=default, label=label, info=info)
    if isinstance(default, bool):
        return gr.Checkbox(value=default, label=label, info=info)
    if isinstance(default, int):
        return gr.Number(value=default, label=label, info=info, precision=0)
    if isinstance(default, float):
        return gr.Number(value=default, label=label, info=info)
    return gr.Textbox(value=default, label=label, info=info)


def build(ctx: AppContext, demo: gr.Blocks, page: gr.Tab) -> TrainTab:
    defaults = RunConfig()
    field_names = {f.name for f in dataclasses.fields(RunConfig)}
    launched: dict[str, object] = {}  # run dir -> Popen, so finished children are reaped

    with gr.Row():
        with gr.Column(scale=3):
            base = gr.Dropdown(ctx.workspace.base_choices(), value=DEFAULT_BASE, label="Base model", allow_custom_value=True,
                               elem_id="base-model",
                               info="The bundled model, a folder under WORKSPACE/models, or type a hub id / "
                                    "local path.")
            datasets = gr.Dropdown(upload_choices(ctx), value=[], multiselect=True, label="Training data",
                                   allow_custom_value=True, elem_id="train-data",
                                   info="Files from the Data tab (upload or use a sample there first).")
            data_note = gr.Markdown("")
            plan_note = gr.Markdown("", elem_id="train-plan")
            with gr.Row():
                # every method is a valid value (API clients pick any); the page narrows the choice to the data's shape
                method = gr.Radio([(m.label, m.name) for m in methods.METHODS.values()], value="sft", label="Method",
                                  info="DPO and KTO appear when the data has their shape.")
                adapter = gr.Radio([(ADAPTER_LABELS[a], a) for a in ADAPTERS], value="qlora", label="Technique")
            with gr.Row():
                epochs = gr.Number(None, label="Epochs", minimum=0, info="0 or empty: planned from the data")
                max_steps = gr.Number(None, label="Max steps", precision=0, minimum=0,
                                      info="0 or empty: planned; overrides epochs")
                lr = gr.Number(0, label="Learning rate", minimum=0, info=lr_hint(DEFAULT_BASE, "qlora"))
                batch_size = gr.Number(defaults.batch_size, label="Batch size", precision=0, minimum=1)
                max_length = gr.Number(defaults.max_length, label="Max tokens per example", precision=0, minimum=16)
                lora_r = gr.Number(defaults.lora_r, label="LoRA rank", precision=0, minimum=1)
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    run_name = gr.Textbox(label="Run name", placeholder="empty: date-method-technique")
                    parent = gr.Dropdown(finished_run_choices(ctx), value="", label="Continue from run",
                                         allow_custom_value=True,
                                         info="start from a finished run's weights (its base is used)")
                advanced = {}
                with gr.Row(equal_height=False):
                    for name, label, info in ADVANCED:
                        if name in field_names:
                            advanced[name] = knob(name, label, info, getattr(defaults, name))
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="start-training")
                cancel = gr.Button("Cancel run", variant="stop", elem_id="cancel-run")
                to_front = gr.Button("Move to front", elem_id="move-to-front")
        with gr.Column(scale=2):
            listed_runs = run_state_choices(ctx)
            run = gr.Dropdown(listed_runs, value=listed_runs[0][1] if listed_runs else None, label="Run",
                              interactive=True, elem_id="run-picker", allow_custom_value=True)
            progress = gr.HTML("<div class='run-progress'>No run selected.</div>", elem_id="run-progress")
            plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="series", title="Loss", height=260,
                               elem_id="loss-plot", x_title="step", y_title="loss",
                               color_map={"train loss": "#4f46e5", "eval loss": "#f59e0b"})
            score_plot = gr.LinePlot(score_frame([]), x="step", y="value", color="series", height=220,
                                     title="Rewards and accuracy", elem_id="score-plot", visible=False)
            log = gr.Code(label="Log (last lines)", elem_id="run-log", language=None, lines=LOG_LINES, max_lines=LOG_LINES,
                          interactive=False)
            with gr.Accordion("Run status as JSON", open=False):
                status_data = gr.JSON(show_label=False)
    comparison_note = gr.Markdown("", elem_id="comparison-note")
    comparison = gr.Dataframe(label="Base vs tuned: answers to held-out and general prompts", wrap=True,
                              interactive=False, visible=False, elem_id="comparison",
                              column_widths=["10%", "24%", "33%", "33%"])
    gr.Markdown("### Runs")
    with gr.Row():
        refresh_runs = gr.Button("Refresh runs", size="sm", scale=0)
    runs_table = gr.Dataframe(runs_frame(ctx), label="Every run in the workspace (click a row to watch it)",
                              interactive=False, wrap=True, max_height=360, elem_id="runs-table")
    timer = gr.Timer(POLL_SECONDS, active=False)
    last_seen = gr.State(None)  # what the outputs show now, so an unchanged tick sends nothing

    # -- handlers --------------------------------------------------------------------------------------------
    def on_data(paths: list[str] | None, current: str):
        """Offer the methods the selected files' shape allows."""
        paths = [p for p in (paths or []) if p]
        shapes = data_shapes(ctx, paths)
        allowed = methods_for(shapes)
        names = {p: ctx.workspace.stored_file(Path(p)).original_name for p in paths}
        if not paths:
            note = "Pick one or more files to train on."
        elif not allowed:
            listing = ", ".join(f"{names[p]} is {s or 'unusable'}" for p, s in shapes.items())
            note = f"⚠️ These files cannot train together ({listing}); pick files of one shape."
        else:
            note = f"Data shape: **{next(iter(shapes.values()))}** → " + ", ".join(m.upper() for m in allowed)
        choices = [(methods.get(m).label, m) for m in (allowed or ["sft"])]
        value = current if current in (allowed or ["sft"]) else (allowed or ["sft"])[0]
        return note, gr.Radio(choices=choices, value=value)

    def plan(paths: list[str] | None, base_model: str, train_method: str, technique: str, n_epochs, steps,
             batch, max_tokens):
        """What Start would train: the steps the defaults resolve to for these files, and about how long."""

        paths = [p for p in (paths or []) if p]
        if not paths or unusable_reason(ctx, paths):
            return ""
        if not ctx.workspace.offers_base(base_model):  # the plan reads the base's tokenizer: never another folder
            return (f"**Plan:** not available ({base_model} is not a base this workspace offers: the bundled model, "
                    "a folder in its models/ or a hub id).")
        try:
            plan_ = plan_for_form(paths, train_method, base=base_model, adapter=technique, epochs=n_epochs,
                                  max_steps=steps, batch_size=batch or 4, max_length=max_tokens or None)
            wait = run_queue.wait_text(ctx.workspace.runs_dir, plan_.est_seconds)
            return f"**Plan:** {plan_.describe()}" + (f"; {wait}" if wait else "")
        except Exception as exc:  # noqa: BLE001  (the plan is advice; Start reports the real error)
            return f"**Plan:** not available ({type(exc).__name__}: {str(exc)[:200]})"

    def refresh_choices(paths=None):
        return (gr.Dropdown(choices=upload_choices(ctx), value=paths) if paths is not None
                else gr.Dropdown(choices=upload_choices(ctx)))

    def start_training(base_model: str, data: list[str], train_method: str, technique: str,
                       n_epochs: float | None = None, steps: float | None = None, learning_rate: float | None = None,
                       batch: float = 4, max_tokens: float = 2048, rank: float = 16, name: str = "",
                       parent_run: str = "", eval_split: float | None = None, eval_steps: float | None = None,
                       early_stopping: float | None = None, **more):
        """Start a training run as a subprocess; returns the run folder and its first status."""
        data = [p for p in (data or []) if p]
        reason = unusable_reason(ctx, data)
        if reason:
            raise gr.Error(reason)
        try:
            config = config_from_form(
                ctx.workspace, data, train_method, data_shapes(ctx, data), parent_run=parent_run, name=name,
                base=base_model, adapter=technique, epochs=n_epochs, max_steps=steps, lr=learning_rate,
                batch_size=batch, max_length=max_tokens, lora_r=rank, eval_split=eval_split, eval_steps=eval_steps,
                early_stopping=early_stopping, **more)
        except ConfigError as exc:
            raise gr.Error(str(exc)) from None
        launched[config.out] = runs.launch(config)
        place = run_queue.places(ctx.workspace.runs_dir).get(Path(config.out).name)
        gr.Info(f"Training started: {Path(config.out).name}" if place is None or not place.after
                else f"{Path(config.out).name}: {place.describe()}")
        return (config.out, gr.Dropdown(choices=run_state_choices(ctx), value=config.out), gr.Timer(active=True),
                runs_frame(ctx))

    def run_status(run_dir: str | None, seen=None):
        """The selected run's progress, plots, log tail, status and (when done) the base/tuned comparison; the run
        pickers and the runs table follow whenever a run's state changes, so no label says "queued" for long."""
        for key, process in list(launched.items()):
            if process.poll() is not None:
                launched.pop(key)
        run_dir = ctx.workspace.run_dir(run_dir)
        if run_dir is None or not (run_dir / "status.json").exists():
            return ("<div class='run-progress'>No run selected.</div>", loss_frame([]), "", {},
                    gr.Dataframe(visible=False), "", gr.Timer(active=False), None, gr.LinePlot(visible=False),
                    gr.skip(), gr.skip(), gr.skip())
        info = runs.load_run(run_dir)
        run_dir = str(run_dir)
        metrics = runs.read_metrics(run_dir)
        tail = ANSI_ESCAPE.sub("", runs.log_tail(run_dir, LOG_LINES))  # tqdm's cursor moves
        watching = info.state in ("queued", "running")
        place = run_queue.places(ctx.workspace.runs_dir).get(info.name) if info.state == "queued" else None
        shown = place.describe() if place else info.state  # a queued run's place moves while its state stays
        signature = (run_dir, shown, len(metrics), info.status.get("phase"))
        changed = seen != signature
        scores = score_frame(metrics)
        plot_value = plot_update(loss_frame(metrics)) if changed else gr.skip()
        score_plot = plot_update(scores, visible=not scores.empty) if changed else gr.skip()
        table, note = gr.skip(), gr.skip()
        if changed:
            frame = comparison_frame(Path(run_dir))
            if frame is not None:
                table = gr.Dataframe(value=frame, visible=True)
                note = "### Base vs tuned\nAnswers written by the training process to `comparison.json`."
            else:
                table = gr.Dataframe(visible=False)
                note = ("The comparison of base and tuned answers appears here when the run is done."
                        if watching else "")
        state_changed = not seen or tuple(seen[:2]) != (run_dir, shown)
        pickers = (gr.Dropdown(choices=run_state_choices(ctx)) if state_changed else gr.skip(),
                   runs_frame(ctx) if changed else gr.skip(),  # its step column moves with every logged step
                   gr.Dropdown(choices=finished_run_choices(ctx)) if state_changed else gr.skip())
        return (progress_html(info, metrics, place), plot_value, tail, status_json(info, metrics), table, note,
                gr.Timer(active=watching), signature, score_plot, *pickers)

    def cancel_run(run_dir: str | None):
        """Ask the selected run to stop; it saves a checkpoint and is marked cancelled. A queued run never starts."""
        run_dir = ctx.workspace.run_dir(run_dir)
        if run_dir is None:
            raise gr.Error("Select a run to cancel.")
        queued = runs.load_run(run_dir).state == "queued"
        if runs.cancel(run_dir):
            gr.Info(f"Cancelling {Path(run_dir).name}: " + ("it leaves the queue and never starts." if queued
                                                           else "it stops after the current step."))
            return True
        gr.Warning(f"{Path(run_dir).name} is not running.")
        return False

    def move_to_front(run_dir: str | None):
        """Put the selected queued run first in line: it starts when a slot frees."""
        run_dir = ctx.workspace.run_dir(run_dir)
        if run_dir is None:
            raise gr.Error("Select a queued run to move.")
        if not run_queue.move_to_front(run_dir):
            gr.Warning(f"{Path(run_dir).name} is not queued.")
            return False
        gr.Info(f"{Path(run_dir).name} is first in line now.")
        return True

    def list_runs():
        """Every run in the workspace with status, base, method, data, losses and parent."""
        return runs_frame(ctx), gr.Dropdown(choices=run_state_choices(ctx)), gr.Dropdown(choices=finished_run_choices(ctx))

    def pick_row(evt: gr.SelectData):
        frame = runs_frame(ctx)
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if row is None or row >= len(frame):
            return gr.skip()
        return str(ctx.workspace.runs_dir / frame.iloc[row]["run"])

    # -- events ----------------------------------------------------------------------------------------------
    datasets.change(on_data, inputs=[datasets, method], outputs=[data_note, method], api_visibility="private")
    plan_inputs = [datasets, base, method, adapter, epochs, max_steps, batch_size, max_length]
    for i, field in enumerate(plan_inputs):
        field.change(plan, inputs=plan_inputs, outputs=[plan_note], show_progress="hidden", trigger_mode="always_last",
                     **({"api_name": "plan"} if i == 0 else {"api_visibility": "private"}))
    for choice in (base, adapter, method):
        choice.change(lambda name, technique, how: gr.Number(info=lr_hint(name, technique, how)),
                      inputs=[base, adapter, method], outputs=[lr], api_visibility="private", show_progress="hidden")
    run_path = gr.Textbox(visible=False, label="run folder")
    # the first eight keep their places: API clients read the status JSON at index 3
    status_outputs = [progress, plot, log, status_data, comparison, comparison_note, timer, last_seen, score_plot,
                      run, runs_table, parent]
    start.click(
        start_training,
        inputs=[base, datasets, method, adapter, epochs, max_steps, lr, batch_size, max_length, lora_r],
        inputs_kwargs={"name": run_name, "parent_run": parent, **advanced},
        outputs=[run_path, run, timer, runs_table], api_name="start_training",
    )
    def replot(run_dir: str | None):
        """The two plots of the picked run, sent once more: when the picker moves to another finished run, the
        browser drew the new legend over the previous run's lines (seen in a walk-through: a GRPO run's reward plot
        showing the DPO run's 15 steps); a second update of the same values draws them."""
        run_dir = ctx.workspace.run_dir(run_dir)
        if run_dir is None or not (run_dir / "status.json").exists():
            return gr.skip(), gr.skip()
        metrics = runs.read_metrics(str(run_dir))
        scores = score_frame(metrics)
        return plot_update(loss_frame(metrics)), plot_update(scores, visible=not scores.empty)

    run.change(run_status, inputs=[run], outputs=status_outputs, api_name="run_status", show_progress="hidden") \
        .then(replot, inputs=[run], outputs=[plot, score_plot], api_visibility="private", show_progress="hidden")
    ticked = timer.tick(run_status, inputs=[run, last_seen], outputs=status_outputs, show_progress="hidden",
                        api_visibility="private")
    cancel.click(cancel_run, inputs=[run], outputs=[gr.State()], api_name="cancel_run").then(
        run_status, inputs=[run], outputs=status_outputs, api_visibility="private")
    to_front.click(move_to_front, inputs=[run], outputs=[gr.State()], api_name="move_to_front").then(
        lambda: list_runs(), outputs=[runs_table, run, parent], api_visibility="private")  # /list_runs keeps its name
    refresh_runs.click(list_runs, outputs=[runs_table, run, parent], api_name="list_runs")
    runs_table.select(pick_row, outputs=[run], api_visibility="private")

    def on_show(current_run: str | None):
        """Fresh choices when the page loads or the tab opens: uploads, bases, runs (newest selected if none).
        The data selection is left alone: an upload may be selecting its file at this very moment."""
        listed = run_state_choices(ctx)
        values = [v for _, v in listed]
        return (gr.Dropdown(choices=upload_choices(ctx)),
                gr.Dropdown(choices=ctx.workspace.base_choices()),
                gr.Dropdown(choices=listed, value=current_run if current_run in values else
                            (values[0] if values else None)),
                gr.Dropdown(choices=finished_run_choices(ctx)),
                runs_frame(ctx))

    show_outputs = [datasets, base, run, parent, runs_table]
    # A new page shows the newest run; opening the tab again keeps the one being watched.
    loaded = demo.load(lambda: on_show(None), outputs=show_outputs, api_visibility="private")
    loaded.then(run_status, inputs=[run], outputs=status_outputs, api_visibility="private", show_progress="hidden")
    loaded.then(on_data, inputs=[datasets, method], outputs=[data_note, method], api_visibility="private")
    page.select(on_show, inputs=[run], outputs=show_outputs, api_visibility="private")
    return TrainTab(base, datasets, run, runs_table, refresh_choices)


def lr_hint(base: str | None, adapter: str | None, method: str | None = None) -> str:
    """What 0 means for the learning rate: the default RunConfig resolves for this base, technique and method."""
    default = RunConfig(base=base or DEFAULT_BASE, adapter=adapter or "qlora", method=method or "sft").learning_rate
    return f"0: the default for this base, technique and method ({default:g})"
