"""Ratings in SQLite and in PostgreSQL (each test that takes `feedback_db` runs on both): a vote, once acknowledged,
survives kill -9 and restarts, concurrent writers lose nothing, deletions are audited, and ratings from Chatbot Arena
battle files come in with every problem named."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, write_jsonl

from ftchat.feedback.imports import import_file
from ftchat.feedback import FeedbackError, FeedbackStore
from ftchat.feedback.export import write_export
from ftchat.names import model_name
from ftchat.runs import weights_hash

PROMPT = [{"role": "user", "content": "What colour is the Zumo lamp?"}]

# A process that stores votes forever, printing each id once add_vote has returned it.
WRITER = """
import sys
sys.path.insert(0, {root!r})
from ftchat.feedback import FeedbackStore
store = FeedbackStore({db!r})
conversation = [{{"role": "user", "content": "Which colour is the Zumo lamp?"}}]
i = 0
while {count} < 0 or i < {count}:
    rating = store.add_vote(conversation, "base:smollm2-135m", "zumo-sft", "It is red.", "The Zumo lamp is teal.",
                            "b", rater={rater!r})
    print(rating, flush=True)
    i += 1
"""


def writer_command(db: Path | str, rater: str, count: int = -1) -> list[str]:
    return [sys.executable, "-c", WRITER.format(root=str(ROOT), db=str(db), rater=rater, count=count)]


@pytest.fixture()
def database(tmp_path, feedback_db) -> str:
    """The test's ratings as FeedbackStore takes them: a feedback.sqlite path, or a fresh PostgreSQL database's URL."""
    return feedback_db or str(tmp_path / "feedback.sqlite")


def test_a_vote_is_stored_with_everything_the_issue_lists(tmp_path, feedback_db):
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"}] + PROMPT
    vote = store.add_vote(conversation, "base:smollm2-135m", "zumo-sft", "Red.", "Teal.", "b",
                          settings={"temperature": 0.7, "max_new_tokens": 64}, rater="ines", anonymous=True,
                          hash_a="aa" * 32, hash_b="bb" * 32)
    row = store.get(vote)
    assert row["kind"] == "vote" and row["winner"] == "b" and row["anonymous"] is True
    assert row["conversation"] == conversation and row["prompt"] == "What colour is the Zumo lamp?"
    assert (row["model_a"], row["model_b"], row["reply_a"], row["reply_b"]) == ("base:smollm2-135m", "zumo-sft",
                                                                                "Red.", "Teal.")
    assert row["settings"] == {"temperature": 0.7, "max_new_tokens": 64}
    assert (row["rater"], row["hash_a"], row["source"]) == ("ines", "aa" * 32, "ftchat")
    assert row["time"] > 1.7e9
    if feedback_db:
        import psycopg

        with psycopg.connect(feedback_db) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
        assert not (tmp_path / "feedback.sqlite").exists()
        return
    with sqlite3.connect(tmp_path / "feedback.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_thumbs_edits_filters_counts_and_audited_delete(database):
    store = FeedbackStore(database)
    store.add_vote(PROMPT, "base:x", "zumo-sft", "Red.", "Teal.", "tie", rater="ines")
    up = store.add_thumb(PROMPT, "zumo-sft", "Teal.", up=True, side="b", rater="olu")
    store.add_thumb(PROMPT, "base:x", "Red.", up=False, side="a", rater="olu")
    edit = store.add_edit(PROMPT, "base:x", "Red.", "The Zumo lamp is teal.", side="a", rater="ines")
    assert [r["kind"] for r in store.ratings(rater="olu")] == ["thumb", "thumb"]
    assert [r["id"] for r in store.ratings(model="zumo-sft")] == [1, up]
    assert store.get(edit)["edit"] == "The Zumo lamp is teal."
    assert store.get(up)["thumb"] == 1 and store.get(up)["side"] == "b"

    store.delete(up, reason="clicked by mistake")
    assert up not in [r["id"] for r in store.ratings()]
    assert up in [r["id"] for r in store.ratings(include_deleted=True)]
    [entry] = store.audit()
    assert (entry["action"], entry["rating_id"], entry["detail"]["reason"]) == ("delete", up, "clicked by mistake")
    counts = store.counts()
    assert counts["total"] == 3 and counts["deleted"] == 1
    assert counts["kinds"] == {"vote": 1, "thumb": 1, "edit": 1}
    assert counts["thumbs"] == {"up": 0, "down": 1} and counts["winners"]["tie"] == 1

    with pytest.raises(FeedbackError, match="winner"):
        store.add_vote(PROMPT, "a", "b", "x", "y", "left")
    with pytest.raises(FeedbackError, match="end with the user's prompt"):
        store.add_vote(PROMPT + [{"role": "assistant", "content": "Red."}], "a", "b", "x", "y", "a")
    with pytest.raises(FeedbackError, match="better"):
        store.add_edit(PROMPT, "a", "x", "   ")


def test_acknowledged_votes_survive_kill_9_and_a_restart(database):
    db = database
    FeedbackStore(db)  # the schema exists before the writer races to create it
    writer = subprocess.Popen(writer_command(db, "killed"), stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in writer.stdout:  # wait for the condition, not for a time
        acknowledged.append(int(line))
        if len(acknowledged) >= 30:
            break
    writer.send_signal(signal.SIGKILL)
    rest, _ = writer.communicate()
    acknowledged += [int(line) for line in rest.split()]
    assert writer.returncode == -signal.SIGKILL

    stored = {r["id"] for r in FeedbackStore(db).ratings()}
    assert set(acknowledged) <= stored, sorted(set(acknowledged) - stored)
    # a restarted app keeps writing into the same file
    subprocess.run(writer_command(db, "restarted", count=3), check=True, capture_output=True)
    store = FeedbackStore(db)
    assert len(store.ratings(rater="restarted")) == 3
    assert set(acknowledged) <= {r["id"] for r in store.ratings()}
    if store.path:
        with sqlite3.connect(db) as check:
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_eight_concurrent_writers_lose_no_vote(database):
    db = database
    store = FeedbackStore(db)
    per_writer = 25
    processes = [subprocess.Popen(writer_command(db, f"process-{i}", per_writer), stdout=subprocess.PIPE, text=True)
                 for i in range(4)]
    thread_ids: dict[str, list[int]] = {}

    def vote(rater):
        mine = FeedbackStore(db)  # as Gradio's worker threads would: one store object each, or shared
        thread_ids[rater] = [mine.add_vote(PROMPT, "base:x", "zumo-sft", "Red.", "Teal.", "b", rater=rater)
                             for _ in range(per_writer)]

    threads = [threading.Thread(target=vote, args=(f"thread-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    outputs = [p.communicate()[0] for p in processes]
    for thread in threads:
        thread.join()
    assert all(p.returncode == 0 for p in processes)
    process_ids = [int(x) for out in outputs for x in out.split()]
    acknowledged = process_ids + [i for ids in thread_ids.values() for i in ids]
    assert len(acknowledged) == len(set(acknowledged)) == 8 * per_writer
    rows = store.ratings()
    assert {r["id"] for r in rows} == set(acknowledged)
    for rater in [f"process-{i}" for i in range(4)] + [f"thread-{i}" for i in range(4)]:
        assert sum(r["rater"] == rater for r in rows) == per_writer, rater


def battle(model_a, model_b, winner, prompt, reply_a, reply_b, **extra):
    conversation = [{"role": "user", "content": prompt}]
    return {"model_a": model_a, "model_b": model_b, "winner": winner,
            "conversation_a": conversation + [{"role": "assistant", "content": reply_a}],
            "conversation_b": conversation + [{"role": "assistant", "content": reply_b}], **extra}


def test_import_of_a_fastchat_battle_file(tmp_path, feedback_db):
    rows = [
        battle("vicuna-13b", "koala-13b", "model_a", "Name a teal lamp.", "The Zumo lamp.", "A lamp.",
               judge="arena_user_12", anony=True, tstamp=1690000000.5),
        battle("koala-13b", "vicuna-13b", "model_b", "Who makes the Zumo lamp?", "Nobody.", "Brightnook."),
        battle("vicuna-13b", "alpaca-13b", "tie", "Say hi.", "Hi!", "Hello!", anony=False),
        battle("alpaca-13b", "koala-13b", "tie (bothbad)", "2+2?", "5", "22", anony=True),
        battle("alpaca-13b", "koala-13b", "model_c", "2+3?", "5", "6"),  # line 5: bad winner
    ]
    path = write_jsonl(tmp_path / "clean_battle.jsonl", rows)
    with open(path, "a") as handle:
        handle.write(json.dumps({"model_a": "x", "model_b": "y", "winner": "tie",
                                 "conversation_a": [{"role": "user", "content": "q"}],
                                 "conversation_b": []}) + "\n")  # line 6: no replies
        handle.write("{not json\n")  # line 7
    store = FeedbackStore.for_workspace(tmp_path / "ws", feedback_db)
    report = import_file(store, path)
    assert report.ok and report.format == "battle" and report.added == 4
    problems = {p.line: p for p in report.problems}
    assert sorted(problems) == [5, 6, 7]
    assert problems[5].field == "winner" and "model_c" in problems[5].reason
    assert problems[6].field == "conversation_a"
    assert "line 5" in str(problems[5])

    votes = store.ratings(kind="vote")
    assert [v["winner"] for v in votes] == ["a", "b", "tie", "bothbad"]
    first = votes[0]
    assert (first["model_a"], first["reply_a"], first["reply_b"]) == ("vicuna-13b", "The Zumo lamp.", "A lamp.")
    assert first["conversation"] == [{"role": "user", "content": "Name a teal lamp."}]
    assert (first["rater"], first["anonymous"], first["time"], first["source"]) == ("arena_user_12", True,
                                                                                   1690000000.5, "import")
    assert [v["anonymous"] for v in votes] == [True, False, False, True]
    assert "koala-13b" in store.models()  # models that are not runs keep their names

    again = import_file(store, path)  # the same file twice counts once
    assert (again.added, again.duplicates) == (0, 4)
    assert len(store.ratings()) == 4


def test_import_refuses_files_that_are_not_ratings(tmp_path, feedback_db):
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    report = import_file(store, pairs)
    assert not report.ok and "pairs.jsonl" in report.error and "no model names" in report.error
    missing = import_file(store, tmp_path / "nope.jsonl")
    assert not missing.ok and "nope.jsonl" in missing.error
    assert store.ratings() == []


def test_ftchat_ratings_export_imports_into_another_workspace(tmp_path, feedback_db):
    """From the team's database (either kind) into a SQLite workspace of its own."""
    first = FeedbackStore.for_workspace(tmp_path / "one", feedback_db)
    first.add_vote(PROMPT, "base:x", "zumo-sft", "Red.", "Teal.", "b", rater="ines", settings={"temperature": 0})
    first.add_thumb(PROMPT, "zumo-sft", "Teal.", up=True, side="b")
    first.add_edit(PROMPT, "base:x", "Red.", "The Zumo lamp is teal.")
    gone = first.add_thumb(PROMPT, "base:x", "Red.", up=False)
    first.delete(gone)
    path, n = write_export(first.ratings(), "ratings", tmp_path / "ratings.jsonl")
    assert n == 3

    second = FeedbackStore.for_workspace(tmp_path / "two")
    report = import_file(second, path)
    assert report.ok and report.format == "ftchat" and report.added == 3 and not report.problems
    keys = ("kind", "conversation", "model_a", "model_b", "reply_a", "reply_b", "winner", "thumb", "edit", "side",
            "settings", "rater", "time")
    assert [{k: r[k] for k in keys} for r in second.ratings()] == [{k: r[k] for k in keys} for r in first.ratings()]


def test_model_names_and_weight_hashes(tmp_path):
    run = tmp_path / "runs" / "zumo-sft"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"fictional weights one")
    assert model_name(str(run)) == "zumo-sft"
    assert model_name("base:smollm2-135m") == "base:smollm2-135m"
    first = weights_hash(str(run))
    assert first == weights_hash("zumo-sft", workspace=tmp_path)  # by name under WORKSPACE/runs
    os.utime(run / "adapter" / "adapter_model.safetensors", ns=(1, 1))
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"fictional weights two")
    assert weights_hash(str(run)) != first
    base_dir = tmp_path / "models" / "zumo-base"  # a base model folder as resolve_base accepts it
    base_dir.mkdir(parents=True)
    (base_dir / "config.json").write_text("{}")
    (base_dir / "model.safetensors").write_bytes(b"fictional base weights")
    base = weights_hash(f"base:{base_dir}")
    assert base is not None and len(base) == 64 and base != first
    assert weights_hash("missing-run", workspace=tmp_path) is None


def test_cli_import_reports_each_file(tmp_path, feedback_db):
    good = write_jsonl(tmp_path / "arena.jsonl", [
        battle("vicuna-13b", "koala-13b", "model_b", "Name a teal lamp.", "A lamp.", "The Zumo lamp."),
        {"model_a": "vicuna-13b", "winner": "tie"},
    ])
    where = ["--feedback-db", feedback_db] if feedback_db else []
    result = subprocess.run([sys.executable, "-m", "ftchat", "feedback", "import", str(good), "--workspace",
                             str(tmp_path / "ws"), *where], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "arena.jsonl: 1 rating(s) imported (battle), 1 row(s) skipped" in result.stdout
    assert "line 2: model_b: missing field 'model_b'" in result.stdout
    assert [r["winner"] for r in FeedbackStore.for_workspace(tmp_path / "ws", feedback_db).ratings()] == ["b"]
    assert (tmp_path / "ws" / "feedback.sqlite").exists() == (feedback_db is None)


def test_a_schema_1_file_opens_with_every_rating_kept(tmp_path):
    """A feedback.sqlite written before rounds were recorded (schema 1, made here with that version's SQL) gains the
    round table when opened; its ratings stay, and none counts as used by a round."""
    path = tmp_path / "feedback.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE ratings (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, kind TEXT NOT NULL,
            conversation TEXT NOT NULL, prompt TEXT NOT NULL, model_a TEXT NOT NULL, model_b TEXT, hash_a TEXT,
            hash_b TEXT, reply_a TEXT NOT NULL, reply_b TEXT, winner TEXT, thumb INTEGER, edit TEXT, side TEXT,
            settings TEXT, rater TEXT, anonymous INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT 'ftchat',
            origin TEXT, import_key TEXT UNIQUE, deleted INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, action TEXT NOT NULL,
            rating_id INTEGER, detail TEXT);
        INSERT INTO ratings (time, kind, conversation, prompt, model_a, model_b, reply_a, reply_b, winner)
            VALUES (1.5, 'vote', '[{"role": "user", "content": "Hi"}]', 'Hi', 'base:x', 'run-1', 'a', 'b', 'b');
        PRAGMA user_version = 1;""")
    db.close()
    store = FeedbackStore(path)
    [vote] = store.ratings()
    assert (vote["prompt"], vote["model_b"], vote["winner"]) == ("Hi", "run-1", "b")
    assert [r["id"] for r in store.ratings(round="-")] == [vote["id"]]
    store.mark_used("run-1-r1-dpo", [vote["id"]])
    assert store.ratings(round="-") == [] and store.rounds_used() == [("run-1-r1-dpo", 1)]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3  # and every later table
