"""Data tab: upload training files (or pick a shipped sample) and see what ftchat makes of them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ftchat.data import length_stats, preview_rows
from ftchat.methods import methods_for_shapes
from ftchat.ui.context import MAX_TOKENS, AppContext, FileReport, stored_choices
from ftchat.workspace import DATA_EXTENSIONS, SAMPLES_DIR, UploadError, human_size, sample_files, sample_label

SHOW_SKIPPED = 20
PREVIEW_ROWS = 5
SHAPE_NOTES = {  # what a shape is; which methods train on it comes from ftchat.methods
    "messages": "conversations",
    "prompt_completion": "prompt / completion pairs (trained as conversations)",
    "preference": "chosen / rejected pairs",
    "unpaired_preference": "answers labelled good / bad",
    "prompt_only": "prompts only (the trainer writes the answers and a reward scores them)",
    "text": "plain text (continued pre-training)",
}


def shape_note(shape: str | None) -> str:
    allowed = methods_for_shapes([shape]) if shape else []
    what = SHAPE_NOTES.get(shape, shape or "unusable")
    return f"{what} → trains with {', '.join(m.upper() for m in allowed)}" if allowed else f"{what} → no method"


@dataclass
class DataTab:
    files: gr.File
    sample: gr.Dropdown
    stored: gr.Dropdown
    report: gr.Markdown
    report_json: gr.JSON
    histogram: gr.BarPlot
    preview: gr.Dataframe
    loaded_paths: gr.State  # stored paths of the files in the last report, for the Train tab
    events: list  # the events that load files; the Train tab chains its refresh onto them


# -- pure helpers (no gradio): what the report says --------------------------------------------------------------

def sample_choices() -> list[tuple[str, str]]:
    return [(sample_label(p), p.relative_to(SAMPLES_DIR).as_posix()) for p in sample_files()]


def report_json(name: str, report: FileReport | None, error: str | None = None) -> dict:
    if report is None:
        return {"file": name, "ok": False, "format": None, "shape": None, "examples": 0, "skipped": [],
                "error": error, "tokens": {}}

    out = report.loaded.to_json()
    out["file"] = name
    out["stored_as"] = report.loaded.file
    out["tokens"] = length_stats(report.lengths)
    return out


def report_markdown(name: str, report: FileReport | None, error: str | None = None) -> str:
    if report is None:
        return f"### {name} · not usable\n**Not stored:** {error}"
    loaded = report.loaded
    lines = [f"### {name} · {'usable' if loaded.ok else 'NOT USABLE'}"]
    if loaded.format:
        lines.append(
            f"**Format** `{loaded.format}` · **shape** `{loaded.shape}` ({shape_note(loaded.shape)}) · "
            f"**usable examples** {loaded.examples} · **skipped rows** {loaded.skipped_count}"
        )
    if loaded.error:
        lines.append(f"**Cannot use this file:** {loaded.error}")
    for warning in loaded.warnings:
        lines.append(f"**Check:** {warning}")
    if report.lengths:
        stats = length_stats(report.lengths)
        sample = f" of a sample of {len(report.lengths)}" if report.sampled else ""
        lines.append(f"**{report.counted_with.capitalize()} per example{sample}:** "
                     + " · ".join(f"{k} {v}" for k, v in stats.items())
                     + f" (rows over {MAX_TOKENS} tokens are skipped, as training skips them at its default "
                       f"*Max tokens per example*; raise that in the Train tab to keep longer rows)")
    if loaded.skipped:
        lines.append("\n| line | record | why it was skipped |\n|---:|---:|---|")
        for skipped in loaded.skipped[:SHOW_SKIPPED]:
            reason = str(skipped.reason).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {skipped.line} | {skipped.record or ''} | {reason} |")
        if loaded.skipped_count > SHOW_SKIPPED:
            lines.append(f"\n… and {loaded.skipped_count - SHOW_SKIPPED} more skipped rows.")
    return "\n\n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if len(lines) > 2 else "")


def nice_bin_width(longest: int, bins: int = 20) -> int:
    raw = max(1, longest / bins)
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if raw <= step * magnitude:
            return int(step * magnitude)
    return int(10 * magnitude)


def histogram_frame(lengths: list[int]):
    """Examples per token-length bin, as a frame of (bin start, examples) for a bar plot."""
    import pandas as pd

    if not lengths:
        return pd.DataFrame({"tokens": [], "examples": []})
    width = nice_bin_width(max(lengths) - min(lengths) + 1)
    counts: dict[int, int] = {}
    for length in lengths:
        start = (length // width) * width  # bins start at multiples of the width: labels stay round
        counts[start] = counts.get(start, 0) + 1
    starts = range(min(counts), max(counts) + width, width)
    return pd.DataFrame({
        "tokens": [f"{s}–{s + width - 1}" if width > 1 else str(s) for s in starts],
        "examples": [counts.get(s, 0) for s in starts],
    })


def preview_frame(report: FileReport | None):
    import pandas as pd

    if report is None or not report.ok:
        return pd.DataFrame()

    rows = preview_rows(report.loaded.rows, report.loaded.shape, n=PREVIEW_ROWS)
    return pd.DataFrame([{key: readable(value) for key, value in row.items()} for row in rows])


def readable(text: str) -> str:
    """A preview cell as Markdown: each "role: content" line of a conversation on its own line, the role in bold."""
    lines = []
    for line in str(text).split("\n"):
        line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        role, sep, rest = line.partition(": ")
        lines.append(f"**{role}:** {rest}" if sep and role in ("system", "user", "assistant") else line)
    return "<br>".join(lines)


def inspect(ctx: AppContext, named_paths: list[tuple[str, Path | None, str | None]]):
    """The tab's outputs for files already stored: (display name, stored path or None, error if not stored)."""
    reports, sections, paths, lengths, first_ok = [], [], [], [], None
    for name, path, error in named_paths:
        report = ctx.report(path) if path is not None else None
        reports.append(report_json(name, report, error))
        sections.append(report_markdown(name, report, error))
        if report is not None and report.ok:
            paths.append(str(path))
            lengths += report.lengths
            if first_ok is None:
                first_ok = (name, report)
    markdown = "\n\n---\n\n".join(sections) if sections else "Upload a file or pick a sample to see its report."
    if paths:
        markdown += "\n\n**Next:** open the **2. Train** tab; the usable files are selected there."
    return (
        markdown,
        reports,
        gr.BarPlot(value=histogram_frame(lengths), visible=bool(lengths)),
        gr.Dataframe(value=preview_frame(first_ok[1] if first_ok else None), visible=first_ok is not None),
        gr.Dropdown(choices=stored_choices(ctx), value=paths[0] if paths else None),
        paths,
    )


# -- the tab -----------------------------------------------------------------------------------------------------

def build(ctx: AppContext, demo: gr.Blocks) -> DataTab:
    gr.Markdown(
        "Upload training data in any format ftchat reads (OpenAI / ShareGPT / Alpaca conversations, prompt / "
        "completion pairs, DPO pairs, KTO feedback, CSV, plain text, Markdown or PDF documents). "
        "No data of your own? Pick a sample."
    )
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(
                label=f"Upload training files ({', '.join(DATA_EXTENSIONS)}; up to "
                      f"{human_size(ctx.workspace.max_upload_bytes)} each)",
                file_count="multiple", file_types=list(DATA_EXTENSIONS),
            )
        with gr.Column(scale=2):
            samples = sample_choices()
            sample = gr.Dropdown(choices=samples, value=samples[0][1] if samples else None,
                                 label="…or try a sample", interactive=True)
            use_sample = gr.Button("Use sample", variant="primary")
            stored = gr.Dropdown(choices=stored_choices(ctx), value=None, label="Uploaded before", interactive=True,
                                 allow_custom_value=True)
    report = gr.Markdown("Upload a file or pick a sample to see its report.", elem_id="data-report")
    with gr.Row():
        histogram = gr.BarPlot(
            x="tokens", y="examples", sort=None, title="Token length per example", height=260, y_lim=[0, None],
            x_title="tokens per example", y_title="examples", x_label_angle=-45,
            scale=2, visible=False,
        )
        with gr.Column(scale=1):
            with gr.Accordion("Report as JSON", open=False):
                report_data = gr.JSON(label="report", show_label=False)
    preview = gr.Dataframe(label="Preview: the first normalized rows", wrap=True, interactive=False,
                           max_height=420, visible=False, datatype="markdown")
    loaded_paths = gr.State([])
    outputs = [report, report_data, histogram, preview, stored, loaded_paths]

    def upload(files: list[str] | None):
        """Store uploaded files in the workspace and report on each: format, shape, examples, skipped rows."""
        named = []
        for file in files or []:
            source = Path(file)
            try:
                stored_file = ctx.workspace.store_upload(source, source.name)
                named.append((source.name, stored_file.path, None))
            except (UploadError, OSError) as exc:
                named.append((source.name, None, str(exc)))
        if not named:
            raise gr.Error("No file arrived; choose a training file to upload.")
        return inspect(ctx, named)

    def use(sample_name: str | None):
        """Copy a shipped sample file into the workspace and report on it."""
        by_name = {p.relative_to(SAMPLES_DIR).as_posix(): p for p in sample_files()}
        if sample_name not in by_name:
            raise gr.Error(f"Unknown sample '{sample_name}'; pick one of: {', '.join(by_name)}.")
        stored_file = ctx.workspace.store_upload(by_name[sample_name])
        return inspect(ctx, [(Path(sample_name).name, stored_file.path, None)])

    def show(path: str | None):
        """Report on a file uploaded earlier."""
        if not path:
            return (gr.skip(),) * len(outputs)
        if not ctx.workspace.is_upload(path) or not Path(path).is_file():
            raise gr.Error("That upload is no longer in the workspace; upload it again.")
        name = ctx.workspace.stored_file(Path(path)).original_name
        return inspect(ctx, [(name, Path(path), None)])

    demo.load(lambda: gr.Dropdown(choices=stored_choices(ctx)), outputs=[stored], api_visibility="private")
    events = [
        files.upload(upload, inputs=files, outputs=outputs, api_name="upload"),
        use_sample.click(use, inputs=sample, outputs=outputs, api_name="use_sample"),
        stored.input(show, inputs=stored, outputs=outputs, api_name="inspect_upload"),
    ]
    return DataTab(files, sample, stored, report, report_data, histogram, preview, loaded_paths, events)
