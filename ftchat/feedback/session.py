"""One rating exchange in the Chat tab: which model answers in which pane, what a vote, a thumb or a written answer
stores, and how arena mode hides the names until the vote.

An exchange is one prompt answered by both panes. It is open once both replies are in and closed by a vote; the next
message starts a new one. The Chat tab keeps an `Exchange` in its session state and calls these functions; nothing
here draws anything.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from ftchat.feedback.store import FeedbackStore
from ftchat.names import model_name
from ftchat.runs import weights_hash

# The pane a button names → the `winner` a vote stores (model_a always answered in the left pane).
WINNER_OF = {"left": "a", "right": "b", "tie": "tie", "bothbad": "bothbad"}
VOTE_TEXT = {"left": "left better", "right": "right better", "tie": "tie", "bothbad": "both bad"}
SIDE_OF = {"left": "a", "right": "b"}
ARENA_NAMES = {"left": "Model A", "right": "Model B"}


class RatingError(ValueError):
    """A rating cannot be given now (nothing answered yet, already voted); the message says what to do."""


@dataclass
class Exchange:
    """Both panes' answers to one prompt, and the vote on them once given."""

    left: str  # the chat choice answering in the left pane (base:NAME or a run folder)
    right: str
    arena: bool = False  # names hidden until the vote
    conversation_left: list[dict] = field(default_factory=list)  # the messages up to and including the prompt
    conversation_right: list[dict] = field(default_factory=list)
    reply_left: str | None = None
    reply_right: str | None = None
    settings: dict = field(default_factory=dict)  # generation settings and system prompt
    vote: str | None = None  # left | right | tie | bothbad
    vote_id: int | None = None

    @property
    def answered(self) -> bool:
        return self.reply_left is not None and self.reply_right is not None

    @property
    def open(self) -> bool:
        """Answered and not yet voted on."""
        return self.answered and self.vote is None

    @property
    def hidden(self) -> bool:
        """Arena mode before the vote: the panes must not say which model is which."""
        return self.arena and self.vote is None

    def choice(self, side: str) -> str:
        return self.left if side == "left" else self.right

    def to_dict(self) -> dict:
        return asdict(self)


def start_exchange(left_pick: str, right_pick: str, arena: bool, rng: random.Random | None = None) -> Exchange:
    """A new exchange between the two picked models. In arena mode the sides are shuffled, so the left picker's
    model answers on the right half of the time; otherwise each pane answers with its own picker's model."""
    if not left_pick or not right_pick:
        raise RatingError("Pick a model for both sides.")
    left, right = left_pick, right_pick
    if arena and (rng or random).random() < 0.5:
        left, right = right, left
    return Exchange(left=left, right=right, arena=bool(arena))


def for_message(exchange: Exchange | None, left_pick: str, right_pick: str, arena: bool,
                rng: random.Random | None = None) -> tuple[Exchange, bool]:
    """The exchange a new message belongs to, and whether it is a new one. A message continues the exchange until
    it is voted on (a follow-up question before voting); after a vote, or with other models or mode, it starts a
    new one. In arena mode a new exchange is a new battle: the caller starts it from an empty chat."""
    if exchange is not None and exchange.vote is None and exchange.arena == bool(arena):
        same = (exchange.left, exchange.right) == (left_pick, right_pick)
        if same or (arena and {exchange.left, exchange.right} == {left_pick, right_pick}):
            return exchange, False
    return start_exchange(left_pick, right_pick, arena, rng), True


def answered(exchange: Exchange | None, left: str, right: str, conversation_left: list[dict],
             conversation_right: list[dict], reply_left: str, reply_right: str, settings: dict) -> Exchange:
    """The exchange once both panes have replied. When the models that answered are not the exchange's own (an
    API call, or the pickers changed), a new plain (not arena) exchange records who really answered."""
    if exchange is None or exchange.vote is not None or (exchange.left, exchange.right) != (left, right):
        exchange = Exchange(left=left, right=right, arena=False)
    exchange.conversation_left = [dict(m) for m in conversation_left]
    exchange.conversation_right = [dict(m) for m in conversation_right]
    exchange.reply_left, exchange.reply_right = reply_left, reply_right
    exchange.settings = dict(settings)
    return exchange


def record_vote(store: FeedbackStore, exchange: Exchange | None, vote: str, rater: str | None = None,
                workspace=None, task_item: int | None = None) -> int:
    """Store a vote on an open exchange at once (one transaction) and close the exchange; returns the rating id.
    `task_item`: the rating-task item the exchange answers, linked to the vote in the same transaction."""
    if vote not in WINNER_OF:
        raise RatingError(f"vote: '{vote}' is not one of {', '.join(WINNER_OF)}.")
    if exchange is None or not exchange.answered:
        raise RatingError("Nothing to vote on yet: send a message and wait for both replies.")
    if exchange.vote is not None:
        raise RatingError(f"This exchange is already counted ({VOTE_TEXT[exchange.vote]}); send the next message.")
    settings = dict(exchange.settings)
    if exchange.conversation_right != exchange.conversation_left:
        # the panes' earlier turns differ (multi-turn chat): keep the right pane's own context too
        settings["conversation_b"] = exchange.conversation_right
    rating_id = store.add_vote(
        exchange.conversation_left, model_name(exchange.left), model_name(exchange.right),
        exchange.reply_left, exchange.reply_right, WINNER_OF[vote], settings=settings, rater=rater,
        anonymous=exchange.arena, hash_a=weights_hash(exchange.left, workspace),
        hash_b=weights_hash(exchange.right, workspace), task_item=task_item)
    exchange.vote, exchange.vote_id = vote, rating_id
    return rating_id


def record_better_answer(store: FeedbackStore, exchange: Exchange | None, side: str, better: str,
                         rater: str | None = None, workspace=None) -> int:
    """Store the answer a person wrote in place of one pane's reply (an edit: chosen over the model's reply)."""
    if side not in SIDE_OF:
        raise RatingError(f"side: '{side}' is not left or right.")
    if exchange is None or not exchange.answered:
        raise RatingError("Nothing to improve yet: send a message and wait for both replies.")
    if not (better or "").strip():
        raise RatingError("Write the better answer first.")
    choice = exchange.choice(side)
    conversation = exchange.conversation_left if side == "left" else exchange.conversation_right
    reply = exchange.reply_left if side == "left" else exchange.reply_right
    return store.add_edit(conversation, model_name(choice), reply, better.strip(), side=SIDE_OF[side],
                          settings=exchange.settings, rater=rater, anonymous=exchange.hidden,
                          hash=weights_hash(choice, workspace))


def record_thumb(store: FeedbackStore, history: list[dict], index: int, choice: str, up: bool, side: str,
                 settings: dict | None = None, rater: str | None = None, anonymous: bool = False,
                 workspace=None) -> int:
    """Store a thumb on the assistant message at `index` of a pane's history (plain {"role", "content"} dicts)."""
    if not 0 <= index < len(history) or history[index].get("role") != "assistant":
        raise RatingError(f"message {index}: there is no reply there to rate.")
    conversation = history[:index]
    if not conversation or conversation[-1].get("role") != "user":
        raise RatingError(f"message {index}: the reply does not follow a user message.")
    return store.add_thumb(conversation, model_name(choice), history[index]["content"], bool(up),
                           side=SIDE_OF.get(side), settings=settings, rater=rater, anonymous=anonymous,
                           hash=weights_hash(choice, workspace))


def pane_names(exchange: Exchange | None, describe) -> tuple[str, str]:
    """What the two panes are called: 'Model A' / 'Model B' in arena mode until the vote, then the real names
    (`describe(choice)` gives a model's display name)."""
    if exchange is None:
        return "Left", "Right"
    if exchange.hidden:
        return ARENA_NAMES["left"], ARENA_NAMES["right"]
    if exchange.arena:
        return tuple(f"{ARENA_NAMES[side]} was {describe(exchange.choice(side))}" for side in ("left", "right"))
    return tuple(f"{side.title()} · {describe(exchange.choice(side))}" for side in ("left", "right"))


def counted_text(exchange: Exchange) -> str:
    """The line shown once a vote is stored, e.g. '✓ counted: left better'."""
    return f"✓ counted: {VOTE_TEXT[exchange.vote]}" if exchange.vote else ""
