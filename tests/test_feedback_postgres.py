"""Ratings in PostgreSQL (`--feedback-db postgresql://...`), where several app processes serve one team: no vote a
process was told is stored gets lost or stored twice when a process is killed or the database restarts, another
process sees a vote at once, a newer schema is refused untouched, and a database that cannot be reached is one
sentence that names it and never its password."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, ftchat_main
from pg import free_port

from ftchat.feedback.store import RECONNECT_S, FeedbackError, FeedbackStore

VOTER = Path(__file__).with_name("pg_voter.py")
# Another process that reads: for each id on a line of stdin, "found" once the rating can be read, else why not.
READER = """
import sys
sys.path.insert(0, {root!r})
from ftchat.feedback import FeedbackError, FeedbackStore
store = FeedbackStore({url!r})
for line in sys.stdin:
    try:
        store.get(int(line))
        print("found", flush=True)
    except FeedbackError as exc:
        print(exc, flush=True)
"""


def ids_in(path: Path) -> list[int]:
    """The ids a voter printed so far (a line still being written is not one yet)."""
    return [int(line) for line in path.read_text().split("\n")[:-1]]


def wait_for(condition, what: str, deadline: float) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def read_now(reader: subprocess.Popen, rating_id: int) -> str:
    reader.stdin.write(f"{rating_id}\n")
    reader.stdin.flush()
    return reader.stdout.readline().strip()


def test_three_app_processes_keep_every_acknowledged_vote_through_kill_9_and_a_database_restart(postgres, tmp_path):
    deadline = time.monotonic() + 50  # the whole story, processes started and stopped included, within a minute
    url = postgres.create_database()  # empty: the three processes race to create the tables
    stop = tmp_path / "stop"
    outputs = [tmp_path / f"ids-{i}.txt" for i in range(3)]
    failures = [tmp_path / f"failed-{i}.txt" for i in range(3)]
    voters = [subprocess.Popen([sys.executable, str(VOTER), url, f"app{i}", str(stop)], cwd=ROOT,
                               stdout=open(outputs[i], "w"), stderr=open(failures[i], "w")) for i in range(3)]
    reader = subprocess.Popen([sys.executable, "-c", READER.format(root=str(ROOT), url=url)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(len(ids_in(out)) >= 40 for out in outputs), "40 votes from each process", deadline)
        assert read_now(reader, ids_in(outputs[0])[-1]) == "found"  # the newest vote, in another process, at once

        voters[2].send_signal(signal.SIGKILL)  # its 8 threads are voting
        voters[2].wait(10)
        killed = ids_in(outputs[2])
        before = [len(ids_in(out)) for out in outputs[:2]]
        postgres.restart()  # every connection of every process is cut
        wait_for(lambda: all(len(ids_in(out)) >= n + 40 for out, n in zip(outputs, before)),
                 "40 more votes from each live process after the restart", deadline)
        assert read_now(reader, ids_in(outputs[1])[-1]) == "found"
    finally:
        stop.touch()
        for process in voters:
            try:
                process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        reader.stdin.close()
        reader.wait(10)

    assert voters[2].returncode == -signal.SIGKILL
    assert [voter.returncode for voter in voters[:2]] == [0, 0], [f.read_text()[-2000:] for f in failures]
    acknowledged = [i for out in outputs for i in ids_in(out)]
    assert len(acknowledged) == len(set(acknowledged)), "an id was returned twice"
    rows = FeedbackStore(url).ratings()
    stored = {row["id"] for row in rows}
    assert set(acknowledged) <= stored, sorted(set(acknowledged) - stored)
    assert len(killed) >= 40 and set(killed) <= stored
    [(label, times)] = Counter(row["reply_a"] for row in rows).most_common(1)
    assert times == 1, f"{label} was stored {times} times"
    # A vote cut off by the restart failed in one sentence naming the database (or waited and went through).
    for failed in failures[:2]:
        for line in failed.read_text().splitlines():
            assert "the ratings database postgresql://postgres@127.0.0.1" in line and "Traceback" not in line, line


def test_a_newer_schema_database_is_refused_untouched(postgres):
    url = postgres.create_database()
    with psycopg.connect(url) as db:  # what a later ftchat (schema 99) left there
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    with pytest.raises(FeedbackError, match="newer ftchat") as caught:
        FeedbackStore(url)
    assert url in str(caught.value) and "--feedback-db" in str(caught.value)
    with psycopg.connect(url) as db:
        tables = db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        assert [row[0] for row in tables] == ["meta"]


def test_a_database_that_cannot_be_reached_is_one_sentence_without_its_password(tmp_path):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    code, out, err = ftchat_main("feedback", "leaderboard", "--workspace", tmp_path, "--feedback-db",
                                 f"postgresql://ana:s3cret-word@127.0.0.1:{port}/ratings")
    waited = time.monotonic() - started
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: the ratings database postgresql://ana@127.0.0.1:{port}/ratings cannot be reached ("),\
        err
    assert "s3cret" not in err and "Traceback" not in err
    assert RECONNECT_S <= waited < RECONNECT_S + 15, "a server that is restarting gets a few seconds to come back"
    assert list(tmp_path.iterdir()) == [], "no feedback.sqlite made in its place"

    code, _, err = ftchat_main("feedback", "leaderboard", "--workspace", tmp_path, "--feedback-db",
                               "mysql://ana:s3cret-word@db.example/ratings")
    assert code == 1 and err == ("error: --feedback-db: ftchat cannot keep ratings in mysql://ana@db.example/ratings; "
                                 "give postgresql://user@host:port/db, or sqlite:///FILE for a SQLite file.\n")
