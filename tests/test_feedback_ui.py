"""Rating through the app as a program drives it (`python app.py` in a subprocess, gradio_client): chat, vote, see
the vote in the Feedback tab; eight people voting at once; thumbs, better answers, deletion, export and import; the
leaderboard; the prompt queue; a round that lacks ratings; and votes that survive a kill -9 of the app."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from conftest import write_jsonl
from test_ui_api import AppProcess, last_reply, make_workspace, value_of

from ftchat.cores import STREAMING_DIR

QUESTION = "What colour is the Zumo lamp?"
TOKENS = 64  # the tiny random model starts with newlines; by 64 tokens its replies hold some text


def two_bases(root: Path, tiny_model_dir: Path) -> tuple[Path, str, str]:
    """A workspace with two base folders (the tiny model twice), and their chat choices."""
    workspace = make_workspace(root, tiny_model_dir)
    shutil.copytree(tiny_model_dir, workspace / "models" / "second")
    return workspace, f"base:{workspace / 'models' / 'tiny'}", f"base:{workspace / 'models' / 'second'}"


def chat(client, left: str, right: str, text: str = QUESTION, tokens: int = TOKENS):
    return client.predict(text, left, right, [], [], "", 0.0, 0.9, tokens, api_name="/chat")


def ratings(client, **filters) -> list[list]:
    return client.predict(filters.get("model", ""), filters.get("source", ""), filters.get("rater", ""),
                          filters.get("kind", ""), filters.get("round", ""), api_name="/ratings")


def counts_text(client) -> str:
    return client.predict("", "", "", "", "", False, None, None, "dpo", api_name="/refresh_feedback")[0]


@pytest.fixture(scope="module")
def rated_app(tmp_path_factory, tiny_model_dir):
    workspace, left, right = two_bases(tmp_path_factory.mktemp("feedback-ui"), tiny_model_dir)
    process = AppProcess(workspace)
    process.left, process.right = left, right
    yield process
    process.stop()


def test_a_vote_is_stored_with_both_replies_and_shows_in_the_feedback_tab(rated_app):
    client = rated_app.client()
    left_history, right_history, _ = chat(client, rated_app.left, rated_app.right)
    with pytest.raises(Exception, match="Nothing to vote on"):
        rated_app.client().predict("", api_name="/vote_left")  # another session has nothing to vote on
    *_, status, vote = client.predict("Ilse", api_name="/vote_left")
    assert "✓ counted: left better" in status and f"rating #{vote['id']}" in status
    with pytest.raises(Exception, match="already counted"):
        client.predict("Ilse", api_name="/vote_right")

    row = next(r for r in ratings(client, kind="vote") if r[0] == vote["id"])
    columns = dict(zip(["id", "time", "kind", "rater", "outcome", "a", "b", "prompt", "reply_a", "reply_b"], row))
    assert (columns["a"], columns["b"], columns["outcome"], columns["rater"]) == \
        ("base:models/tiny", "base:models/second", "A better", "Ilse")
    assert columns["prompt"] == QUESTION

    from ftchat.feedback.store import FeedbackStore

    stored = FeedbackStore.for_workspace(rated_app.workspace).get(vote["id"])
    # stored as the model wrote them (the chat shows them without leading newlines)
    assert stored["reply_a"].strip() == last_reply(left_history).strip() != ""
    assert stored["reply_b"].strip() == last_reply(right_history).strip()
    assert stored["hash_a"] and stored["hash_a"] == stored["hash_b"]  # the same weights in both folders
    assert stored["settings"]["max_new_tokens"] == TOKENS and stored["anonymous"] is False
    assert stored["conversation"] == [{"role": "user", "content": QUESTION}]


def test_eight_people_voting_at_once_lose_no_vote(rated_app):
    before = {r[0] for r in ratings(rated_app.client(), kind="vote")}
    votes = ["left", "right", "tie", "bothbad"] * 2
    results, errors = {}, []

    from gradio_client import Client

    # patient clients: eight sessions at once on two shared cores answer slowly
    clients = [Client(rated_app.url, analytics_enabled=False, verbose=False, httpx_kwargs={"timeout": 300})
               for _ in range(8)]

    def voter(i: int):
        try:
            client = clients[i]
            chat(client, rated_app.left, rated_app.right, text=f"Voter {i}: {QUESTION}", tokens=8)
            results[i] = client.predict(f"voter-{i}", api_name=f"/vote_{votes[i]}")[-1]
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(f"voter {i}: {exc!r}")

    threads = [threading.Thread(target=voter, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    rows = {r[0]: r for r in ratings(rated_app.client(), kind="vote") if r[0] not in before}
    assert sorted(rows) == sorted(v["id"] for v in results.values())
    outcome = {"left": "A better", "right": "B better", "tie": "tie", "bothbad": "both bad"}
    for i, vote in results.items():
        assert (rows[vote["id"]][4], rows[vote["id"]][3]) == (outcome[votes[i]], f"voter-{i}")
        assert rows[vote["id"]][7] == f"Voter {i}: {QUESTION}"


def test_thumbs_better_answers_deletion_and_exports(rated_app, tmp_path):
    client = rated_app.client()
    left_history, right_history, _ = chat(client, rated_app.left, rated_app.right)
    up = client.predict("left", 1, True, left_history, rated_app.left, "Ilse", api_name="/thumb")
    down = client.predict("right", 1, False, right_history, rated_app.right, "Ilse", api_name="/thumb")
    with pytest.raises(Exception, match="no reply there"):
        client.predict("left", 0, True, left_history, rated_app.left, "", api_name="/thumb")
    cleared, status = client.predict("right", "The Zumo lamp is teal.", "Ilse", api_name="/better_answer")
    assert cleared == "" and "saved your answer for the right reply" in status
    *_, vote = client.predict("Ilse", api_name="/vote_right")

    thumbs = {r[0]: r for r in ratings(client, kind="thumb")}
    assert (thumbs[up][5], thumbs[up][4]) == ("base:models/tiny", "thumbs up")
    assert (thumbs[down][5], thumbs[down][4]) == ("base:models/second", "thumbs down")
    edits = ratings(client, kind="edit")
    assert edits[0][9] == "The Zumo lamp is teal." and edits[0][5] == "base:models/second"

    _, _, _, _, *_ = client.predict(down, "a mistaken click", "", "", "", "", "", api_name="/delete_rating")
    assert down not in {r[0] for r in ratings(client, kind="thumb")}
    from ftchat.feedback.store import FeedbackStore

    audit = FeedbackStore.for_workspace(rated_app.workspace).audit()
    assert any(a["rating_id"] == down and a["detail"]["reason"] == "a mistaken click" for a in audit)

    path, status = client.predict("dpo", "", api_name="/export_ratings")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert {"prompt", "chosen", "rejected"} <= set(rows[0]) and "Checked as an upload: preference" in status
    assert any(r["chosen"][-1]["content"] == "The Zumo lamp is teal." for r in rows)  # the written answer
    folder = status.split("`datasets` folder: `")[1].split("`")[0]
    from datasets import load_from_disk

    assert len(load_from_disk(folder)) == len(rows)
    path, status = client.predict("sft", "", api_name="/export_ratings")
    sft = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert any(r["messages"][-1]["content"] == "The Zumo lamp is teal." for r in sft)
    # only the left model's ratings: its thumbs-up (votes between the two copies of one model have equal replies,
    # which teach nothing and are left out)
    path, _ = client.predict("kto", rated_app.left, api_name="/export_ratings")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [(last_reply(left_history), True)]
    # the right model's: its written answer (good) and the reply it replaces (bad); its thumb down on that same
    # reply was deleted, so the reply is bad once, not twice
    path, _ = client.predict("kto", rated_app.right, api_name="/export_ratings")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert [(r["completion"][0]["content"].strip(), r["label"]) for r in rows] == [
        ("The Zumo lamp is teal.", True), (last_reply(right_history).strip(), False)]


def test_imported_battles_reach_the_leaderboard_and_the_blind_toggle(rated_app, tmp_path):
    battles = []
    for i in range(12):
        winner = "model_a" if i % 4 else "model_b"  # wren beats finch three times in four
        battles.append({"model_a": "wren-7b", "model_b": "finch-3b", "winner": winner, "anony": i < 8,
                        "conversation_a": [{"role": "user", "content": f"Name a river in Ostmark ({i})"},
                                           {"role": "assistant", "content": "The Lidde."}],
                        "conversation_b": [{"role": "user", "content": f"Name a river in Ostmark ({i})"},
                                           {"role": "assistant", "content": "A river."}]})
    battles.append({"model_a": "wren-7b", "winner": "model_a"})  # no model_b: skipped with its line
    file = write_jsonl(tmp_path / "arena-battles.jsonl", battles)
    from gradio_client import handle_file

    client = rated_app.client()
    summary = client.predict([handle_file(str(file))], api_name="/import_ratings")
    assert "arena-battles.jsonl: 12 rating(s) imported" in summary and "line 13" in summary

    board, chart, matrix = client.predict(False, api_name="/leaderboard")
    rows = {r[1]: r for r in value_of(board)["data"]}
    assert rows["wren-7b"][2] > rows["finch-3b"][2] and rows["wren-7b"][4] == 12
    low, high = (float(x) for x in rows["wren-7b"][3].split(" – "))
    assert low <= rows["wren-7b"][2] <= high
    assert "<svg" in chart and ">wren-7b<" in chart and ">rating (Bradley–Terry" in chart
    matrix = value_of(matrix)
    row = next(r for r in matrix["data"] if r[0] == "wren-7b")
    assert row[matrix["headers"].index("finch-3b")] == "75%"

    blind, _, _ = client.predict(True, api_name="/leaderboard")
    blind_rows = {r[1]: r for r in value_of(blind)["data"]}
    assert blind_rows["wren-7b"][4] == 8 and "base:models/tiny" not in blind_rows  # chat votes were not blind


def test_the_prompt_queue_asks_each_prompt_in_turn(rated_app):
    client = rated_app.client()
    progress = client.predict(None, None, "Where is Port Elsby?\nWho founded Varn?\n", api_name="/load_prompts")
    assert progress == "2 prompts loaded from typed prompts"
    message, _, left, right, progress = client.predict("", api_name="/next_prompt")
    assert (message, left, right, progress) == ("Where is Port Elsby?", [], [], "prompt 1 of 2")
    message, *_, progress = client.predict("", api_name="/next_prompt")
    assert (message, progress) == ("Who founded Varn?", "prompt 2 of 2")
    with pytest.raises(Exception, match="All 2 prompts are done"):
        client.predict("", api_name="/next_prompt")


def test_the_round_filter_tells_used_ratings_from_new_ones(rated_app):
    from ftchat.feedback.store import FeedbackStore

    client = rated_app.client()
    chat(client, rated_app.left, rated_app.right)
    *_, first = client.predict("Ilse", api_name="/vote_left")
    chat(client, rated_app.left, rated_app.right)
    *_, second = client.predict("Ilse", api_name="/vote_right")
    everything = {r[0] for r in ratings(client)}
    FeedbackStore.for_workspace(rated_app.workspace).mark_used("second-r1-dpo", [first["id"]])  # as a round does

    assert [r[0] for r in ratings(client, round="second-r1-dpo")] == [first["id"]]
    unused = {r[0] for r in ratings(client, round="-")}
    assert second["id"] in unused and unused == everything - {first["id"]}


def test_a_round_says_which_of_its_ratings_an_earlier_round_already_trained_on(rated_app):
    from ftchat.feedback.store import FeedbackStore

    store = FeedbackStore.for_workspace(rated_app.workspace)
    conversation = [{"role": "user", "content": "When does the Brisk kettle switch itself off?"}]
    ids = [store.add_vote(conversation, "brisk-sft", "base:brisk", f"After {i} minutes idle, by its timer.", "Soon.",
                          "a", rater="Ilse") for i in range(10)]
    client = rated_app.client()
    assert client.predict("brisk-sft", "dpo", api_name="/round_readiness") == \
        "Ready: the ratings of **brisk-sft** give 10 DPO pairs."
    store.mark_used("brisk-sft-r1-dpo", ids[:8])  # as the first round from brisk-sft does
    assert client.predict("brisk-sft", "dpo", api_name="/round_readiness") == (
        "Ready: the ratings of **brisk-sft** give 10 DPO pairs. 8 of its ratings already trained **brisk-sft-r1-dpo**: "
        "this round trains on them again.")
    store.mark_used("brisk-sft-r2-dpo", ids[6:])
    assert client.predict("brisk-sft", "kto", api_name="/round_readiness").endswith(
        " 8 of its ratings already trained **brisk-sft-r1-dpo**; 4 of its ratings already trained "
        "**brisk-sft-r2-dpo**: this round trains on them again.")


def test_a_round_without_enough_ratings_says_how_many_more_it_needs(rated_app):
    client = rated_app.client()
    tiny_b = "base:" + str(rated_app.workspace / "models" / "second")
    readiness = client.predict(tiny_b, "dpo", api_name="/round_readiness")
    assert "need" in readiness and "more ratings" in readiness
    run, status = client.predict(tiny_b, "dpo", 0, api_name="/start_round")
    assert run == "" and "need" in status and "more" in status
    # nothing was launched: runs/ holds only the chat's streaming marks (ftchat.cores)
    assert [p.name for p in (rated_app.workspace / "runs").iterdir()] in ([], [STREAMING_DIR])


@pytest.mark.slow
def test_votes_survive_a_kill_9_of_the_app(tmp_path, tiny_model_dir):
    workspace, left, right = two_bases(tmp_path, tiny_model_dir)
    app = AppProcess(workspace)
    try:
        client = app.client()
        ids = []
        for vote in ("left", "tie"):
            chat(client, left, right, tokens=8)
            ids.append(client.predict("", api_name=f"/vote_{vote}")[-1]["id"])
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait(30)
    finally:
        app.stop()
    again = AppProcess(workspace)
    try:
        client = again.client()
        rows = {r[0]: r[4] for r in ratings(client, kind="vote")}
        assert rows == {ids[0]: "A better", ids[1]: "tie"}
        assert "2 votes" in counts_text(client)
    finally:
        again.stop()
