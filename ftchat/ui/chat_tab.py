"""Chat tab: two panes, each with its own model (a base or a finished run); one message goes to both and the
replies stream side by side."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ftchat.models import DEFAULT_BASE, REGISTRY
from ftchat.ui.context import AppContext
from ftchat.ui.train_tab import base_label

BASE_PREFIX = "base:"  # ftchat.chat.BASE_PREFIX, repeated so this module imports without the chat engine
THINKING = "…"
BLANK_REPLY = "(no text: the model answered with whitespace only, or stopped at once)"


@dataclass
class ChatTab:
    left_model: gr.Dropdown
    right_model: gr.Dropdown
    refresh: gr.Button


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """Bases (bundled, workspace model folders, the bases runs were trained on) and every finished run."""
    choices = ctx.engine().choices()
    bases = [(label, value) for label, value in choices if value.startswith(BASE_PREFIX)]
    finished = [(label, value) for label, value in choices if not value.startswith(BASE_PREFIX)]
    seen = {value for _, value in bases}
    for folder in ctx.workspace.model_folders():
        if BASE_PREFIX + str(folder) not in seen:
            bases.append(("", BASE_PREFIX + str(folder)))
    relabelled = []
    for label, value in bases:
        name = value[len(BASE_PREFIX):]
        relabelled.append((label if name in REGISTRY and label else f"base · {base_label(ctx, name)}", value))
    return relabelled + [(f"run · {label}", value) for label, value in finished]


def default_pair(choices: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """Right: the newest finished run; left: what it was trained from (its parent run, else its base). With no
    finished run, the bundled base on both sides."""
    from ftchat import runs

    values = [value for _, value in choices]
    base = BASE_PREFIX + DEFAULT_BASE if BASE_PREFIX + DEFAULT_BASE in values else (values[0] if values else None)
    finished = [v for v in values if not v.startswith(BASE_PREFIX)]
    if not finished:
        return base, base
    newest = finished[0]
    config = runs.load_run(newest).config
    parent, run_base = config.get("parent"), config.get("base")
    if parent and str(parent) in values:
        return str(parent), newest
    if run_base and BASE_PREFIX + run_base in values:
        return BASE_PREFIX + run_base, newest
    return base, newest


def message_text(content) -> str:
    """The text of a message's content, whether a string, a list of parts or one part (as the frontend sends)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        if content.get("type") == "text" or "text" in content:
            return str(content.get("text") or "")
        return ""  # a file or other media: nothing a text model can read
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return str(content)


def plain_history(history) -> list[dict]:
    """Chatbot messages as [{"role", "content": str}] without empty placeholders."""
    out = []
    for m in history or []:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system"):
            continue
        text = message_text(m.get("content"))
        if text == BLANK_REPLY:
            text = ""  # the model really said nothing; keep the turn so user and assistant still alternate
        elif not text or text == THINKING:
            continue
        out.append({"role": m["role"], "content": text})
    return out


def build(ctx: AppContext, demo: gr.Blocks, page: gr.Tab) -> ChatTab:
    choices = model_choices(ctx)
    left_value, right_value = default_pair(choices)
    gr.Markdown("Pick a model for each side, type a message, and both answer at once. "
                "Finished runs appear here; press ↻ if one just finished.")
    with gr.Row(equal_height=False):
        with gr.Column():
            left_model = gr.Dropdown(choices, value=left_value, label="Left model", allow_custom_value=True,
                                     elem_id="left-model")
            left_chat = gr.Chatbot(label="Left", height=420, elem_id="left-chat", feedback_options=None,
                                   buttons=["copy_all"], placeholder="The left model's replies appear here.")
        with gr.Column():
            right_model = gr.Dropdown(choices, value=right_value, label="Right model", allow_custom_value=True,
                                      elem_id="right-model")
            right_chat = gr.Chatbot(label="Right", height=420, elem_id="right-chat", feedback_options=None,
                                    buttons=["copy_all"], placeholder="The right model's replies appear here.")
    with gr.Row():
        message = gr.Textbox(placeholder="Ask both models something…", show_label=False, scale=6, lines=1,
                             max_lines=6, elem_id="chat-message", submit_btn=False)
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=0, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=0, elem_id="chat-clear")
        refresh = gr.Button("↻ Models", scale=0, elem_id="chat-refresh")
    with gr.Accordion("System prompt and generation settings", open=False):
        system = gr.Textbox(label="System prompt", placeholder="e.g. You are Quorvane's support assistant.",
                            lines=2)
        with gr.Row():
            temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature", info="0: greedy (repeatable)")
            top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
            max_new_tokens = gr.Slider(8, 1024, value=128, step=8, label="Max new tokens")

    def chat(text: str, left: str, right: str, left_history: list, right_history: list, system_prompt: str = "",
             temp: float = 0.0, nucleus: float = 0.9, new_tokens: float = 128):
        """Send one message to both models; yields both histories as the replies stream in."""
        from ftchat.chat import ChatError, GenerationSettings, with_system
        from ftchat.models import ModelError

        text = message_text(text).strip()
        if not text:
            raise gr.Error("Type a message first.")
        if not left or not right:
            raise gr.Error("Pick a model for both sides.")
        histories = [plain_history(left_history), plain_history(right_history)]
        for history in histories:
            history.append({"role": "user", "content": text})
        shown = [h + [{"role": "assistant", "content": THINKING}] for h in histories]
        yield shown[0], shown[1], ""
        settings = GenerationSettings(max_new_tokens=int(new_tokens), temperature=float(temp), top_p=float(nucleus))
        requests = [(left, with_system(histories[0], system_prompt)), (right, with_system(histories[1], system_prompt))]
        replies = ["", ""]
        try:
            for replies in ctx.engine().stream(requests, settings):
                yield ([*histories[0], {"role": "assistant", "content": replies[0] or THINKING}],
                       [*histories[1], {"role": "assistant", "content": replies[1] or THINKING}], "")
        except Exception as exc:  # noqa: BLE001  (any failure: the turn is undone and the app keeps answering)
            yield histories[0][:-1], histories[1][:-1], text  # keep the text for another try
            known = isinstance(exc, (ChatError, ModelError))
            raise gr.Error(str(exc) if known else f"The chat failed ({type(exc).__name__}: {exc}).") from None
        yield tuple([*h, {"role": "assistant", "content": reply if reply.strip() else BLANK_REPLY}]
                    for h, reply in zip(histories, replies)) + ("",)

    def models(left: str | None = None, right: str | None = None):
        """The models the chat can use: bases and finished runs, as (label, value) pairs."""
        fresh = model_choices(ctx)
        values = [v for _, v in fresh]
        default_left, default_right = default_pair(fresh)
        return (gr.Dropdown(choices=fresh, value=left if left in values else default_left),
                gr.Dropdown(choices=fresh, value=right if right in values else default_right),
                fresh)

    def on_show(left: str | None, right: str | None, picked: bool):
        """Opening the tab: until the person picks a model on this page, the newest finished run (right) against
        what it was trained from (left); after that, their picks stay."""
        return models(left, right)[:2] if picked else models()[:2]

    inputs = [message, left_model, right_model, left_chat, right_chat, system, temperature, top_p, max_new_tokens]
    outputs = [left_chat, right_chat, message]
    sent = send.click(chat, inputs=inputs, outputs=outputs, api_name="chat", show_progress="hidden")
    submitted = message.submit(chat, inputs=inputs, outputs=outputs, api_visibility="private",
                               show_progress="hidden")
    stop.click(None, cancels=[sent, submitted])
    clear.click(lambda: ([], [], ""), outputs=[left_chat, right_chat, message], api_name="clear_chat")
    refresh.click(models, inputs=[left_model, right_model], outputs=[left_model, right_model, gr.JSON(visible=False)],
                  api_name="models")
    # A run that finished since the page was built shows up without a restart, paired against what it was trained
    # from, unless the person has picked models on this page (`.input` fires for a person's choice only).
    picked = gr.State(False)
    for picker in (left_model, right_model):
        picker.input(lambda: True, outputs=[picked], api_visibility="private", show_progress="hidden")
    demo.load(lambda: models()[:2], outputs=[left_model, right_model], api_visibility="private")
    page.select(on_show, inputs=[left_model, right_model, picked], outputs=[left_model, right_model],
                api_visibility="private")
    return ChatTab(left_model, right_model, refresh)
