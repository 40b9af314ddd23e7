"""The rules of rating in the Chat tab, without the app: what a vote, a thumb and a better answer store, how arena
mode hides and shuffles the sides, and how the prompt queue steps through prompts."""
from __future__ import annotations

import json
import random

import pytest
from conftest import FACT_CHATS, write_jsonl

from ftchat.feedback import session
from ftchat.feedback.prompt_queue import (
    PromptError,
    PromptQueue,
    held_out_prompts,
    prompts_from_file,
    prompts_from_text,
    split_prompt,
)
from ftchat.feedback.store import FeedbackStore

BASE = "base:smollm2-135m"


def answered_exchange(left="runs/quill-sft", right=BASE, arena=False, rng=None) -> session.Exchange:
    exchange, fresh = session.for_message(None, left, right, arena, rng or random.Random(1))
    assert fresh
    prompt = [{"role": "user", "content": "Which colour is the Varnel kettle?"}]
    return session.answered(exchange, exchange.left, exchange.right, prompt, prompt,
                            f"reply of {exchange.left}", f"reply of {exchange.right}", {"temperature": 0.0})


def test_a_vote_stores_both_replies_and_which_model_wrote_each(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    exchange = answered_exchange()
    rating_id = session.record_vote(store, exchange, "right", rater="mira")
    row = store.get(rating_id)
    assert (row["model_a"], row["model_b"], row["winner"]) == ("quill-sft", BASE, "b")
    assert (row["reply_a"], row["reply_b"]) == ("reply of runs/quill-sft", f"reply of {BASE}")
    assert row["conversation"] == [{"role": "user", "content": "Which colour is the Varnel kettle?"}]
    assert (row["rater"], row["anonymous"], row["settings"]["temperature"]) == ("mira", False, 0.0)
    assert session.counted_text(exchange) == "✓ counted: right better" and not exchange.open

    with pytest.raises(session.RatingError, match="already counted"):
        session.record_vote(store, exchange, "left")
    with pytest.raises(session.RatingError, match="Nothing to vote on"):
        session.record_vote(store, session.start_exchange("a", "b", False), "left")
    assert len(store.ratings()) == 1


def test_after_a_vote_the_next_message_starts_a_new_exchange():
    exchange = answered_exchange()
    same, fresh = session.for_message(exchange, exchange.left, exchange.right, False)
    assert same is exchange and not fresh  # a follow-up before voting belongs to the same exchange
    exchange.vote = "tie"
    following, fresh = session.for_message(exchange, exchange.left, exchange.right, False)
    assert fresh and following is not exchange and following.vote is None
    other, fresh = session.for_message(following, "runs/other", BASE, False)
    assert fresh and other.left == "runs/other"  # another model picked: another exchange


def test_arena_mode_shuffles_the_sides_and_hides_the_names_until_the_vote(tmp_path):
    rng = random.Random(7)
    lefts = {session.start_exchange("runs/quill-sft", BASE, True, rng).left for _ in range(40)}
    assert lefts == {"runs/quill-sft", BASE}  # either model may answer on the left
    assert {session.start_exchange("runs/quill-sft", BASE, False, rng).left for _ in range(10)} == {"runs/quill-sft"}

    exchange = answered_exchange(arena=True, rng=random.Random(3))
    describe = {"runs/quill-sft": "quill-sft", BASE: "smollm2"}.get
    assert session.pane_names(exchange, describe) == ("Model A", "Model B")
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    session.record_vote(store, exchange, "left")
    left_name, right_name = session.pane_names(exchange, describe)
    assert left_name == f"Model A was {describe(exchange.left)}"
    assert right_name == f"Model B was {describe(exchange.right)}"
    row = store.ratings()[0]
    assert row["anonymous"] is True and row["model_a"] == session.model_name(exchange.left)


def test_thumbs_and_better_answers_name_the_reply_they_rate(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": "Who makes the Varnel kettle?"}, {"role": "assistant", "content": "Dunno."}]
    thumb = store.get(session.record_thumb(store, history, 3, "runs/quill-sft", False, "right"))
    assert (thumb["model_a"], thumb["reply_a"], thumb["thumb"], thumb["side"]) == ("quill-sft", "Dunno.", -1, "b")
    assert thumb["conversation"] == history[:3]
    with pytest.raises(session.RatingError, match="no reply there"):
        session.record_thumb(store, history, 2, "runs/quill-sft", True, "right")

    exchange = answered_exchange()
    edit = store.get(session.record_better_answer(store, exchange, "left", "  The Varnel kettle is ochre. "))
    assert (edit["kind"], edit["model_a"], edit["reply_a"], edit["edit"]) == \
        ("edit", "quill-sft", "reply of runs/quill-sft", "The Varnel kettle is ochre.")
    with pytest.raises(session.RatingError, match="Write the better answer"):
        session.record_better_answer(store, exchange, "left", "  ")


def test_the_prompt_queue_steps_through_prompts_and_says_where_it_is():
    queue = PromptQueue(prompts_from_text("First question?\n\n  Second question?  \nThird?\n"), source="typed")
    assert len(queue) == 3 and queue.progress() == "3 prompts loaded from typed"
    assert queue.advance() == [{"role": "user", "content": "First question?"}]
    assert queue.progress() == "prompt 1 of 3"
    queue.advance()
    assert queue.progress() == "prompt 2 of 3" and queue.current[0]["content"] == "Second question?"
    queue.advance()
    assert queue.finished and queue.advance() is None and queue.progress() == "all 3 prompts done"

    system, earlier, text = split_prompt([{"role": "system", "content": "Be terse."},
                                          {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                                          {"role": "user", "content": "Colour?"}])
    assert (system, [m["role"] for m in earlier], text) == ("Be terse.", ["user", "assistant"], "Colour?")


def test_prompts_come_from_text_files_data_files_and_a_runs_held_out_rows(tmp_path, chats_file, tiny_model_dir):
    lines = tmp_path / "prompts.txt"
    lines.write_text("Where is Port Elsby?\nWhat does a tallow-wright do?\n")
    assert [p[0]["content"] for p in prompts_from_file(lines)] == ["Where is Port Elsby?",
                                                                  "What does a tallow-wright do?"]
    assert [p[-1]["content"] for p in prompts_from_file(chats_file)] == [q for q, _ in FACT_CHATS]
    documents = tmp_path / "notes.jsonl"
    write_jsonl(documents, [{"text": "Port Elsby lies on the Varn estuary."}])
    with pytest.raises(PromptError, match="notes.jsonl: its text rows have no prompts"):
        prompts_from_file(documents)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(PromptError, match="empty.txt: has no prompts"):
        prompts_from_file(empty)

    from ftchat.config import RunConfig

    run_dir = tmp_path / "runs" / "quill-sft"
    run_dir.mkdir(parents=True)
    RunConfig(data=[str(chats_file)], out=str(run_dir), base=str(tiny_model_dir), eval_split=0.25).resolved() \
        .save(run_dir / "config.yaml")
    held_out = held_out_prompts(run_dir)
    questions = [q for q, _ in FACT_CHATS]
    assert len(held_out) == 2  # a quarter of the 8 rows
    assert all(len(p) == 1 and p[0]["content"] in questions for p in held_out)
    assert len({p[0]["content"] for p in held_out}) == 2

    config = json.loads(json.dumps(RunConfig.load(run_dir / "config.yaml").to_dict()))
    config["data"] = [str(tmp_path / "gone.jsonl")]
    RunConfig.from_dict(config).save(run_dir / "config.yaml")
    with pytest.raises(PromptError, match="gone.jsonl is no longer there"):
        held_out_prompts(run_dir)
