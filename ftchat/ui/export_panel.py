"""The Export panel: pick a finished run and a form, get a folder or file under WORKSPACE/exports/.
Draws and wires only; the exports themselves are ftchat.export's."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ftchat import runs
from ftchat.export.check import GGUFCheck, llamacpp_missing
from ftchat.export.forms import FORMS, ExportError, default_target, export_run
from ftchat.feedback.prompt_queue import check_prompts
from ftchat.feedback.rounds import store_win_rates
from ftchat.ui.context import AppContext


@dataclass
class ExportPanel:
    run: gr.Dropdown
    form: gr.Radio
    quant: gr.Dropdown
    button: gr.Button
    result: gr.Markdown
    refresh: object  # () -> gr.Dropdown update with the finished runs


def check_text(check: GGUFCheck | None) -> str:
    """The llama.cpp check as the panel shows it: the figures, the warning in bold, the first answer that differs."""
    if check is None:
        return ""
    text = f"\n\n{check.summary()}"
    if check.warning():
        text += f"\n\n**{check.warning()}**"
    differs = next((p for p in check.prompts if not p.identical), None)
    if differs is not None and not check.skipped:
        text += (f"\n\nFirst answer that differs, to “{differs.prompt[:80]}”:  \n"
                 f"in the app: {differs.in_app[:200]!r}  \nllama.cpp: {differs.llamacpp[:200]!r}")
    return text


def _finished(ctx: AppContext) -> list[tuple[str, str]]:
    return [(r.name, str(r.path)) for r in runs.list_runs(ctx.workspace.runs_dir) if r.state == "done"]


def build(ctx: AppContext) -> ExportPanel:
    with gr.Accordion("Export a run", open=False):
        choices = _finished(ctx)
        with gr.Row():
            run = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Finished run",
                              allow_custom_value=False)
            form = gr.Radio([(label, name) for name, (label, _) in FORMS.items()], value="merged", label="Form")
            quant = gr.Dropdown(["f16", "q8_0", "q4_0"], value="q8_0", label="GGUF weights", visible=False,
                                info="f16: exact; q8_0: half the size, near-identical; q4_0: smallest, some loss")
        button = gr.Button("Export", variant="secondary")
        result = gr.Markdown()

    def export(run_value, form_value, quant_value):
        run_dir = ctx.workspace.run_dir(run_value)
        if run_dir is None:
            return "Pick a finished run of this workspace first."
        quant_value = quant_value if form_value in ("gguf", "ollama") else None
        target = default_target(ctx.workspace.root / "exports", run_dir.name, form_value, quant_value)
        try:
            prompts = check_prompts(run_dir) if form_value in ("gguf", "ollama") and llamacpp_missing() is None \
                else None
            exported = export_run(run_dir, form_value, target, quant_value,
                                  store_win_rates(ctx.workspace.root, ctx.feedback_db), prompts=prompts)
        except (ExportError, OSError, ValueError) as exc:
            return f"**Export failed:** {exc}"
        written = exported.path
        hint = {"ollama": f"\n\nThen: `cd {written} && ollama create {run_dir.name} -f Modelfile`",
                "gguf": f"\n\nThen: `llama-cli -m {written} -cnv`"}.get(form_value, "")
        return f"Written: `{written}`{hint}{check_text(exported.check)}"

    def refresh():
        options = _finished(ctx)
        return gr.Dropdown(choices=options, value=options[0][1] if options else None)

    form.change(lambda f: gr.Dropdown(visible=f in ("gguf", "ollama"), value="f16" if f == "gguf" else "q8_0"),
                inputs=[form], outputs=[quant], api_visibility="private")
    button.click(export, inputs=[run, form, quant], outputs=[result], api_visibility="private")
    return ExportPanel(run, form, quant, button, result, refresh)
