"""Chat tab: two panes, each with its own model (a base or a finished run); one message goes to both and the
replies stream side by side. Each exchange can be rated (votes, thumbs, a better answer), blind in arena mode, and a
prompt queue steps through prompts to rate. A rater of a rating task finds their next prompt of it waiting, with
their progress, and each vote on it brings the next. What a rating stores is ftchat.feedback.session's business."""
from __future__ import annotations

import random
from dataclasses import dataclass

import gradio as gr

from ftchat.chat.generation import ChatError, GenerationSettings, with_system
from ftchat.feedback import prompt_queue, session, tasks
from ftchat.feedback.prompt_queue import RANK_PROMPTS, PromptError, PromptQueue, split_prompt
from ftchat.feedback.store import FeedbackError
from ftchat.models import ModelError
from ftchat.names import is_base
from ftchat.train.reward_model import RewardModelError, reward_runs
from ftchat.ui.context import AppContext
from ftchat.ui.roles import logged_in

THINKING = "…"
BLANK_REPLY = "(no text: the model answered with whitespace only, or stopped at once)"
# (vote, button text, elem_id)
VOTE_BUTTONS = [("left", "◀ Left is better", "vote-left"), ("right", "Right is better ▶", "vote-right"),
                ("tie", "Tie", "vote-tie"), ("bothbad", "Both bad", "vote-bad")]


@dataclass
class ChatTab:
    left_model: gr.Dropdown
    right_model: gr.Dropdown
    refresh: gr.Button
    queue_panel: gr.Accordion
    queue_text: gr.Textbox  # typed prompts, one a line
    queue: gr.State
    queue_progress: gr.Markdown
    load_typed: object  # (typed prompts) -> (queue, progress line)


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    return ctx.engine().choices()


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
    left_value, right_value = ctx.engine().default_pair(choices)
    rng = random.Random()

    def describe(choice: str) -> str:
        labels = {value: label for label, value in model_choices(ctx)}
        return labels.get(choice) or session.model_name(choice)

    gr.Markdown("Pick a model for each side, type a message, and both answer at once; then say which answer is "
                "better. Finished runs appear here; press ↻ if one just finished.")
    with gr.Row():
        arena = gr.Checkbox(False, label="Arena mode (blind): hide the model names and shuffle the sides until "
                                         "you vote", elem_id="arena-mode", scale=3)
        rater = gr.Textbox(label="Your name (optional, stored with your ratings)", elem_id="rater", scale=2,
                           max_lines=1)  # behind a login the rater is who logged in, and this box shows it
    my_progress = gr.Markdown("", elem_id="my-progress")
    with gr.Row():
        task_progress = gr.Markdown("", elem_id="task-progress")
        task_next = gr.Button("▶ My next task prompt", scale=0, size="sm", elem_id="task-next", visible=False)
    with gr.Row(equal_height=False):
        with gr.Column():
            left_model = gr.Dropdown(choices, value=left_value, label="Left model", allow_custom_value=True,
                                     elem_id="left-model")
            left_chat = gr.Chatbot(label="Left", height=400, elem_id="left-chat", feedback_options=("Like", "Dislike"),
                                   buttons=["copy_all"], placeholder="The left model's replies appear here.")
        with gr.Column():
            right_model = gr.Dropdown(choices, value=right_value, label="Right model", allow_custom_value=True,
                                      elem_id="right-model")
            right_chat = gr.Chatbot(label="Right", height=400, elem_id="right-chat",
                                    feedback_options=("Like", "Dislike"), buttons=["copy_all"],
                                    placeholder="The right model's replies appear here.")
    with gr.Row(elem_id="vote-row"):
        vote_buttons = [gr.Button(text, elem_id=elem_id, interactive=False, size="md")
                        for _, text, elem_id in VOTE_BUTTONS]
    vote_status = gr.Markdown("", elem_id="vote-status")
    with gr.Row():
        message = gr.Textbox(placeholder="Ask both models something…", show_label=False, scale=6, lines=1,
                             max_lines=6, elem_id="chat-message", submit_btn=False)
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=0, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=0, elem_id="chat-clear")
        refresh = gr.Button("↻ Models", scale=0, elem_id="chat-refresh")
    with gr.Accordion("Prompt queue: rate many prompts quickly", open=False, elem_id="queue-panel") as queue_panel:
        gr.Markdown("Load prompts, press **Next prompt**: both sides answer it, you vote, and the next one comes.")
        with gr.Row():
            queue_run = gr.Dropdown(held_out_run_choices(ctx), value=None, label="Held-out prompts of a run",
                                    elem_id="queue-run", scale=2, allow_custom_value=True)
            queue_file = gr.File(label="…or a file (.txt: one prompt per line; or any data file)",
                                 file_types=[".txt", ".jsonl", ".json", ".csv", ".tsv"], elem_id="queue-file",
                                 scale=2)
            queue_text = gr.Textbox(label="…or type them, one per line", lines=4, elem_id="queue-text", scale=3)
        with gr.Row():
            queue_load = gr.Button("Load prompts", elem_id="queue-load", scale=1)
            queue_next = gr.Button("▶ Next prompt", variant="primary", elem_id="queue-next", scale=1)
            queue_auto = gr.Checkbox(True, label="Next prompt right after each vote", elem_id="queue-auto", scale=2)
            queue_progress = gr.Markdown("no prompts loaded", elem_id="queue-progress")
        with gr.Row():
            queue_rank = gr.Checkbox(False, label="Order by reward-model uncertainty: both sides answer each prompt "
                                                  f"briefly (up to {RANK_PROMPTS} prompts), a reward model scores the "
                                                  "replies, and the prompts it is least sure about come first",
                                     elem_id="queue-rank", scale=3)
            queue_reward = gr.Dropdown(reward_choices(ctx), value=None, label="Reward model",
                                       elem_id="queue-reward", scale=2, allow_custom_value=True)
        queue_order = gr.Dataframe(headers=["#", "prompt", "RM margin"], visible=False, interactive=False, wrap=True,
                                   elem_id="queue-order", max_height=260,
                                   label="Queue order: the reward model's margin between the two replies, smallest "
                                         "(least sure) first")
    with gr.Accordion("Write a better answer", open=False, elem_id="better-panel"):
        with gr.Row():
            better_side = gr.Radio(["left", "right"], value="left", label="Instead of the reply on the",
                                   elem_id="better-side", scale=1)
            better_text = gr.Textbox(label="Your answer (kept as the chosen answer and as an SFT example)", lines=3,
                                     elem_id="better-text", scale=4)
            better_save = gr.Button("Save answer", elem_id="better-save", scale=1)
    with gr.Accordion("System prompt and generation settings", open=False):
        system = gr.Textbox(label="System prompt", placeholder="e.g. You are Quorvane's support assistant.",
                            lines=2)
        with gr.Row():
            temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature", info="0: greedy (repeatable)")
            top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
            max_new_tokens = gr.Slider(8, 1024, value=128, step=8, label="Max new tokens")

    exchange = gr.State(None)  # the session.Exchange being answered or rated
    arena_on = gr.State(False)
    queue = gr.State(PromptQueue())
    asked_state = gr.State(False)  # whether a vote just asked the next queued prompt
    replies = gr.State({})  # "side:index" -> [choice, anonymous, thumb id]: who wrote each reply, its last thumb
    task_item = gr.State(None)  # the rating-task item (FeedbackStore.task_items row) the rater is answering
    picked = gr.State(False)  # whether the models were picked on this page (by the person, or by their task)

    # -- what the panes and buttons show for an exchange ----------------------------------------------------------
    def pane_labels(current):
        left, right = session.pane_names(current, describe)
        return gr.Chatbot(label=left), gr.Chatbot(label=right)

    def buttons(current):
        out = []
        for vote, text, _ in VOTE_BUTTONS:
            if current is not None and current.vote == vote:
                out.append(gr.Button(session.counted_text(current), interactive=False, variant="primary"))
            else:
                out.append(gr.Button(text, interactive=current is not None and current.open, variant="secondary"))
        return out

    def status_text(current) -> str:
        if current is None or not current.answered:
            return ""
        if current.vote is None:
            return ("Which answer is better? Vote with the buttons, rate single replies with their thumbs, or write a "
                    "better answer.")
        text = f"**{session.counted_text(current)}** (rating #{current.vote_id})"
        if current.arena:
            text += " — " + ", ".join(session.pane_names(current, describe))
        return text + ". The next message starts a new exchange."

    def show(current):
        return (*pane_labels(current), *buttons(current), status_text(current))

    shown = [left_chat, right_chat, *vote_buttons, vote_status]

    # -- chatting -------------------------------------------------------------------------------------------------
    def before_send(left: str, right: str, arena_mode: bool):
        """While replies stream: arena panes are nameless, the vote buttons wait."""
        names = ("Model A", "Model B") if arena_mode else \
            (f"Left · {describe(left)}" if left else "Left", f"Right · {describe(right)}" if right else "Right")
        return (gr.Chatbot(label=names[0]), gr.Chatbot(label=names[1]), *buttons(None), "")

    def chat(text: str, left: str, right: str, left_history: list, right_history: list, system_prompt: str = "",
             temp: float = 0.0, nucleus: float = 0.9, new_tokens: float = 128, current=None, arena_mode=False):
        """Send one message to both models; yields both histories as the replies stream in."""

        text = message_text(text).strip()
        if not text:
            raise gr.Error("Type a message first.")
        try:
            current, fresh = session.for_message(current, left, right, bool(arena_mode), rng)
        except session.RatingError as exc:
            raise gr.Error(str(exc)) from None
        if fresh and current.arena:  # a new battle starts from an empty chat
            left_history, right_history = [], []
        histories = [plain_history(left_history), plain_history(right_history)]
        for history in histories:
            history.append({"role": "user", "content": text})
        shown_now = [h + [{"role": "assistant", "content": THINKING}] for h in histories]
        yield shown_now[0], shown_now[1], "", current
        settings = GenerationSettings(max_new_tokens=int(new_tokens), temperature=float(temp), top_p=float(nucleus))
        conversations = [with_system(histories[0], system_prompt), with_system(histories[1], system_prompt)]
        requests = [(current.left, conversations[0]), (current.right, conversations[1])]
        replies_now = ["", ""]
        try:
            for replies_now in ctx.engine().stream(requests, settings):
                yield ([*histories[0], {"role": "assistant", "content": replies_now[0] or THINKING}],
                       [*histories[1], {"role": "assistant", "content": replies_now[1] or THINKING}], "", current)
        except Exception as exc:  # noqa: BLE001  (any failure: the turn is undone and the app keeps answering)
            yield histories[0][:-1], histories[1][:-1], text, current  # keep the text for another try
            known = isinstance(exc, (ChatError, ModelError))
            raise gr.Error(str(exc) if known else f"The chat failed ({type(exc).__name__}: {exc}).") from None
        current = session.answered(current, current.left, current.right, conversations[0], conversations[1],
                                   replies_now[0], replies_now[1],
                                   {**settings.__dict__, "system": system_prompt or None})
        yield (*([*h, {"role": "assistant", "content": reply if reply.strip() else BLANK_REPLY}]
                 for h, reply in zip(histories, replies_now)), "", current)

    def after_reply(current, left_history, right_history, seen: dict):
        """Remember which model wrote the newest reply of each pane (for thumbs), then offer the vote."""
        seen = dict(seen or {})
        if current is not None and current.answered:
            for side, history in (("left", left_history), ("right", right_history)):
                if history:
                    seen[f"{side}:{len(history) - 1}"] = [current.choice(side), current.hidden, None]
        return (seen, *show(current))

    def models(left: str | None = None, right: str | None = None):
        """The models the chat can use: bases and finished runs, as (label, value) pairs."""
        fresh = model_choices(ctx)
        values = [v for _, v in fresh]
        default_left, default_right = ctx.engine().default_pair(fresh)

        def kept(value) -> bool:
            """Listed here, or a model this app loads under another app's name for it: a rating task made by an app
            with its own workspace names a base of a models/ folder both share by that app's path."""
            if value in values:
                return True
            if not is_base(value):  # a run not listed (unfinished, deleted) gives way to the default
                return False
            try:
                ctx.engine().resolve_choice(value)
            except ChatError:
                return False
            return True

        return (gr.Dropdown(choices=fresh, value=left if kept(left) else default_left),
                gr.Dropdown(choices=fresh, value=right if kept(right) else default_right),
                fresh)

    def on_show(left: str | None, right: str | None, picked: bool, run: str | None, reward: str | None = None):
        """Opening the tab: until the person picks a model on this page, the newest finished run (right) against
        what it was trained from (left); after that, their picks stay. The queue's run and reward-model lists are
        refreshed too (the newest reward model until one is picked). A rater with a task prompt waiting keeps its
        two models (the tab opens while their task is loading)."""
        pair = models(left, right)[:2] if picked else task_pair() or models()[:2]
        rewards = reward_choices(ctx)
        values = [v for _, v in rewards]
        reward = reward if reward in values else (values[0] if values else None)
        return (*pair, gr.Dropdown(choices=held_out_run_choices(ctx), value=run), gr.Dropdown(choices=rewards, value=reward))

    def waiting_task() -> tuple[dict | None, str]:
        """The logged-in rater's next task item and progress line; none without a login, or while the ratings file
        cannot be read (the Feedback tab says why; chatting goes on)."""
        name = logged_in()
        if not name:
            return None, ""
        try:
            return tasks.next_for(ctx.feedback(), name)
        except FeedbackError:
            return None, ""

    def task_pair():
        """The pickers set to the logged-in rater's next task item's two models; None when they have none waiting."""
        item, _ = waiting_task()
        return models(item["model_left"], item["model_right"])[:2] if item is not None else None

    def clear_chat():
        """A fresh exchange: empty panes, nothing to vote on. The message box is left alone: a person may already be
        typing the next question."""
        left, right = session.pane_names(None, describe)
        return (gr.Chatbot(value=[], label=left), gr.Chatbot(value=[], label=right), gr.skip(), None, {},
                *buttons(None), "")

    def set_arena(on: bool):
        """Arena mode on or off: a fresh chat either way, so no earlier reply gives the names away."""
        return (bool(on), *clear_chat())

    # -- rating ---------------------------------------------------------------------------------------------------
    def rater_of(typed: str | None) -> str | None:
        """Who a rating is stored under: the person logged in; only an app without logins takes the typed name."""
        return logged_in() or typed

    def progress_text() -> str:
        """The logged-in person's own ratings so far (nothing to show without a login)."""
        name = logged_in()
        if not name:
            return ""
        mine = ctx.feedback().ratings(rater=name)
        kinds = {kind: sum(r["kind"] == kind for r in mine) for kind in ("vote", "thumb", "edit")}
        return (f"Signed in as **{name}**: {len(mine)} ratings so far ({kinds['vote']} votes, {kinds['thumb']} "
                f"thumbs, {kinds['edit']} written answers).")

    def my_progress_now() -> str:
        """Your own ratings so far: how many votes, thumbs and written answers are stored under your login."""
        return progress_text()

    def who_rates():
        """On opening the page: the name box shows who is logged in and cannot be changed; and their progress."""
        name = logged_in()
        box = gr.Textbox(value=name, interactive=False, label="Rating as (your login)") if name else gr.skip()
        return box, progress_text()

    def vote_for(vote: str):
        def cast(rater_name: str, current, item=None):
            answers = current is not None and current.answered and \
                tasks.matches(item, current.conversation_left, current.left, current.right)
            try:
                rating_id = session.record_vote(ctx.feedback(), current, vote, rater_of(rater_name),
                                                ctx.workspace.root, task_item=item["id"] if answers else None)
            except (session.RatingError, FeedbackError) as exc:
                raise gr.Error(str(exc)) from None
            return (current, *show(current),
                    {"id": rating_id, "vote": vote, "left": session.model_name(current.left),
                     "right": session.model_name(current.right), "anonymous": current.arena,
                     "task_item": item["id"] if answers else None})
        cast.__doc__ = f"Vote '{vote}' on the current exchange; stored at once. Returns the rating id and models."
        return cast

    def save_better(side: str, better: str, rater_name: str, current):
        """Store a better answer for one side's last reply (the chosen answer of a DPO pair, and an SFT row)."""
        try:
            rating_id = session.record_better_answer(ctx.feedback(), current, side, better, rater_of(rater_name),
                                                     ctx.workspace.root)
        except session.RatingError as exc:
            raise gr.Error(str(exc)) from None
        return "", f"✓ saved your answer for the {side} reply (rating #{rating_id})."

    def thumb_for(side: str):
        def on_like(history, current, seen: dict, rater_name: str, data: gr.LikeData):
            index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
            key = f"{side}:{index}"
            seen = dict(seen or {})
            choice, anonymous, previous = seen.get(key) or [current.choice(side) if current else None, False, None]
            if choice is None:
                raise gr.Error("This reply's model is unknown (the page was reloaded); rate newer replies.")
            store = ctx.feedback()
            if previous is not None:  # a changed or withdrawn thumb replaces the earlier one
                store.delete(previous, reason="thumb changed by the rater")
            thumb_id, text = None, "thumb withdrawn"
            if data.liked in (True, False):
                settings = current.settings if current is not None else None
                try:
                    thumb_id = session.record_thumb(store, plain_history(history), index, choice, data.liked, side,
                                                    settings, rater_of(rater_name), anonymous, ctx.workspace.root)
                except session.RatingError as exc:
                    raise gr.Error(str(exc)) from None
                text = f"✓ counted: thumbs {'up' if data.liked else 'down'} for the {side} reply"
            seen[key] = [choice, anonymous, thumb_id]
            return seen, text
        return on_like

    def thumb(side: str, index: int, up: bool, history: list[dict], model: str, rater_name: str = "") -> int:
        """Thumbs up (up=True) or down for the reply at `index` of a pane's history, written by `model` (a chat
        choice: base:NAME or a run folder); returns the rating id. Only a model the chat offers may be named: its
        weights are hashed for the rating, and a round may later train from it."""
        try:
            ctx.engine().resolve_choice(model)
        except ChatError as exc:
            raise gr.Error(str(exc)) from None
        try:
            return session.record_thumb(ctx.feedback(), plain_history(history), int(index), model, bool(up), side,
                                        rater=rater_of(rater_name), workspace=ctx.workspace.root)
        except session.RatingError as exc:
            raise gr.Error(str(exc)) from None

    # -- the rater's task -----------------------------------------------------------------------------------------
    def task_prompt(item, system_prompt: str) -> tuple[tuple, tuple]:
        """What puts a task item in the Chat tab: (message box, system prompt, left pane, right pane, exchange), its
        prompt waiting in an empty chat; and (task item, left picker, right picker, picked), its two models picked
        (so a picker's default does not replace them)."""
        prompt_system, earlier, text = split_prompt(item["conversation"])
        return ((text, prompt_system or system_prompt, earlier, earlier, None),
                (item, gr.Dropdown(value=item["model_left"]), gr.Dropdown(value=item["model_right"]), True))

    def my_task(system_prompt: str = ""):
        """Your next prompt of your rating task, put in the message box with the task's two models, and your progress
        ('12 of 40 done'); when your part is done, says so."""
        item, text = waiting_task()
        button = gr.Button(visible=bool(text))  # only for a rater whom a task names
        if item is None:
            return (*(gr.skip() for _ in range(5)), None, *(gr.skip() for _ in range(3)), button, text)
        chat, pickers = task_prompt(item, system_prompt)
        return (*chat, *pickers, button, text)

    # -- the prompt queue -----------------------------------------------------------------------------------------
    def load_prompts(run: str | None, file: str | None, typed: str):
        """Prompts to step through: typed ones (one per line), else a file's, else a run's held-out prompts."""

        try:
            if typed and typed.strip():
                loaded = PromptQueue(prompt_queue.prompts_from_text(typed), source="typed prompts")
            elif file:
                loaded = PromptQueue(prompt_queue.prompts_from_file(file), source=file.rsplit("/", 1)[-1])
            elif run:
                run_dir = ctx.workspace.run_dir(run)
                if run_dir is None:
                    raise PromptError(f"{run}: no such run in this workspace.")
                loaded = PromptQueue(prompt_queue.held_out_prompts(run_dir), source=f"{run_dir.name} (held out)")
            else:
                raise PromptError("Pick a run, upload a file or type prompts first.")
        except PromptError as exc:
            raise gr.Error(str(exc)) from None
        return loaded, loaded.progress()

    def rank_prompts(current_queue: PromptQueue, reward: str | None, left: str | None, right: str | None,
                     wanted: bool = True, progress=gr.Progress()):
        """Order the loaded prompts by the reward model's uncertainty between the two panes' models (least sure
        first); returns the queue's progress line, the order with margins, and the replies and margins measured."""

        if not wanted:
            return gr.skip(), gr.skip(), gr.Dataframe(visible=False), None
        if current_queue is None or not len(current_queue):
            raise gr.Error("Load prompts first.")
        reward_dir = ctx.workspace.run_dir(reward) if reward else None
        if reward_dir is None:
            raise gr.Error("Pick a reward model to order the prompts by (train one in 2. Train with the method "
                           "'Reward model')." if not reward else f"{reward}: no such run in this workspace.")
        if not left or not right:
            raise gr.Error("Pick a model for each side first: both answer each prompt for the reward model.")
        try:
            progress(0, desc=f"loading the reward model {reward_dir.name}")
            rm = ctx.reward_model(reward_dir)
            ranked, measured = prompt_queue.rank_by_uncertainty(
                current_queue, left, right, ctx.engine(), rm,
                progress=lambda fraction, text: progress(fraction, desc=text))
        except (PromptError, RewardModelError, ChatError, ModelError) as exc:
            raise gr.Error(str(exc)) from None
        table = [[i + 1, " ".join(row["prompt"].split())[:120], f"{abs(row['margin']):.2f}"]
                 for i, row in enumerate(measured)]
        return ranked, ranked.progress(), gr.Dataframe(value=table, visible=True), measured

    def next_prompt(current_queue: PromptQueue, system_prompt: str):
        """Step to the next queued prompt: both panes start empty and the prompt waits in the message box."""
        if current_queue is None or not len(current_queue):
            raise gr.Error("Load prompts first.")
        prompt = None if current_queue.finished else current_queue.advance()
        if prompt is None:
            raise gr.Error(f"All {len(current_queue)} prompts are done; load more to go on.")
        prompt_system, earlier, text = split_prompt(prompt)
        return (current_queue, text, prompt_system or system_prompt, earlier, earlier, None,
                current_queue.progress())

    def next_after_vote(auto: bool, current_queue: PromptQueue, system_prompt: str, voted: dict | None):
        """After a vote on a task item, ask the rater's next one; after another vote, the next queued prompt when
        that is wanted. The last output says whether a prompt was asked."""
        unchanged = [gr.skip() for _ in task_outputs]
        if voted and voted.get("task_item"):
            item, text = waiting_task()
            if item is None:  # the rater's part is done: the progress line says so
                return (*(gr.skip() for _ in queue_outputs), None, *unchanged[1:-1], text, False)
            chat, pickers = task_prompt(item, system_prompt)
            return (gr.skip(), *chat, gr.skip(), *pickers, text, True)  # the queue and its progress stay
        if not auto or current_queue is None or current_queue.position < 0 or current_queue.finished:
            return (*(gr.skip() for _ in queue_outputs), *unchanged, False)
        return (*next_prompt(current_queue, system_prompt), *unchanged, True)

    def if_asked(step):
        """A step of the chain after a vote that runs only when a queued prompt was asked."""
        def guarded(asked: bool, *values):
            if not asked:
                yield tuple(gr.skip() for _ in range(len(step["outputs"])))
                return
            result = step["fn"](*values)
            if hasattr(result, "__next__"):
                yield from result
            else:
                yield result
        return dict(step, fn=guarded, inputs=[asked_state, *step["inputs"]])

    # -- wiring ---------------------------------------------------------------------------------------------------
    chat_inputs = [message, left_model, right_model, left_chat, right_chat, system, temperature, top_p,
                   max_new_tokens, exchange, arena_on]
    chat_outputs = [left_chat, right_chat, message, exchange]
    after = dict(fn=after_reply, inputs=[exchange, left_chat, right_chat, replies], outputs=[replies, *shown],
                 api_visibility="private")
    before = dict(fn=before_send, inputs=[left_model, right_model, arena_on], outputs=shown,
                  api_visibility="private")
    private_chat = dict(fn=chat, inputs=chat_inputs, outputs=chat_outputs, api_visibility="private",
                        show_progress="hidden")

    sent = send.click(**before).then(chat, inputs=chat_inputs, outputs=chat_outputs, api_name="chat",
                                     show_progress="hidden")
    sent.then(**after)
    submitted = message.submit(**before).then(**private_chat)
    submitted.then(**after)
    queue_outputs = [queue, message, system, left_chat, right_chat, exchange, queue_progress]
    queue_asked = queue_next.click(next_prompt, inputs=[queue, system], outputs=queue_outputs,
                                   api_name="next_prompt").success(**before).success(**private_chat)
    queue_asked.then(**after)
    stop.click(None, cancels=[sent, submitted, queue_asked])
    queue_load.click(load_prompts, inputs=[queue_run, queue_file, queue_text], outputs=[queue, queue_progress],
                     api_name="load_prompts") \
        .success(rank_prompts, inputs=[queue, queue_reward, left_model, right_model, queue_rank],
                 outputs=[queue, queue_progress, queue_order, gr.JSON(visible=False)], api_name="rank_prompts")

    # [task item, left model, right model, picked, task progress]: what asking a task's prompt changes besides the
    # queue's outputs
    task_outputs = [task_item, left_model, right_model, picked, task_progress]
    for (vote, _, _), button in zip(VOTE_BUTTONS, vote_buttons):
        result = gr.JSON(visible=False)
        voted = button.click(vote_for(vote), inputs=[rater, exchange, task_item], outputs=[exchange, *shown, result],
                             api_name=f"vote_{vote}", concurrency_limit=None)  # a vote is one quick write
        voted.success(progress_text, outputs=[my_progress], api_visibility="private", show_progress="hidden")
        voted.success(next_after_vote, inputs=[queue_auto, queue, system, result],
                      outputs=[*queue_outputs, *task_outputs, asked_state], api_visibility="private") \
            .success(**if_asked(before)).success(**if_asked(private_chat)).then(**if_asked(after))
    better_save.click(save_better, inputs=[better_side, better_text, rater, exchange],
                      outputs=[better_text, vote_status], api_name="better_answer", concurrency_limit=None) \
        .success(progress_text, outputs=[my_progress], api_visibility="private", show_progress="hidden")
    left_chat.like(thumb_for("left"), inputs=[left_chat, exchange, replies, rater], outputs=[replies, vote_status],
                   api_visibility="private", concurrency_limit=None)
    right_chat.like(thumb_for("right"), inputs=[right_chat, exchange, replies, rater], outputs=[replies, vote_status],
                    api_visibility="private", concurrency_limit=None)
    gr.api(thumb, api_name="thumb", concurrency_limit=None)
    gr.api(my_progress_now, api_name="my_progress")
    demo.load(who_rates, outputs=[rater, my_progress], api_visibility="private")

    cleared = [left_chat, right_chat, message, exchange, replies, *vote_buttons, vote_status]
    clear.click(clear_chat, outputs=cleared, api_name="clear_chat")
    arena.change(set_arena, inputs=[arena], outputs=[arena_on, *cleared], api_name="set_arena")
    refresh.click(models, inputs=[left_model, right_model], outputs=[left_model, right_model, gr.JSON(visible=False)],
                  api_name="models")
    # A run that finished since the page was built shows up without a restart, paired against what it was trained
    # from, unless the person has picked models on this page (`.input` fires for a person's choice only).
    for picker in (left_model, right_model):
        picker.input(lambda: True, outputs=[picked], api_visibility="private", show_progress="hidden")
    task_loaded = [message, system, left_chat, right_chat, exchange, task_item, left_model, right_model, picked,
                   task_next, task_progress]
    task_next.click(my_task, inputs=[system], outputs=task_loaded, api_name="my_task")
    # the rater's task after the default pair, so that the task's two models stay in the pickers
    demo.load(lambda: task_pair() or models()[:2], outputs=[left_model, right_model], api_visibility="private") \
        .then(my_task, inputs=[system], outputs=task_loaded, api_visibility="private")
    page.select(on_show, inputs=[left_model, right_model, picked, queue_run, queue_reward],
                outputs=[left_model, right_model, queue_run, queue_reward], api_visibility="private")
    return ChatTab(left_model, right_model, refresh, queue_panel, queue_text, queue, queue_progress,
                   lambda typed: load_prompts(None, None, typed))


def reward_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """Finished reward-model runs, for ordering the prompt queue by the reward model's uncertainty."""

    return [(path.name, path.name) for path in reward_runs(ctx.workspace.runs_dir)]


def held_out_run_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """Finished runs, for the prompt queue's held-out prompts."""
    return [(label, value) for label, value in model_choices(ctx) if not is_base(value)]
