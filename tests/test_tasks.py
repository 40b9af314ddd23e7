"""Rating tasks (issue 21): an admin shares a prompt list out among raters, a fifth of the prompts to two of them;
each rater's votes on their items count towards their progress, the overlap prompts measure how the raters agree,
and a rater who votes at random can be left out of the leaderboard and of a round. A test that takes `feedback_db`
runs on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter, defaultdict

import psycopg
import pytest
from conftest import ftchat_main
from test_feedback_rounds import fake_run

from ftchat.feedback import FeedbackStore
from ftchat.feedback.agreement import flagged_raters
from ftchat.feedback.leaderboard import bradley_terry
from ftchat.feedback.rounds import next_round_config
from ftchat.feedback.tasks import TaskError, assign, create_task, matches, next_for, progress, task_report
from ftchat.users import open_users

BASE = "base:smollm2-135m"  # the bundled model: a base every workspace's chat offers


def prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Question {i} about the Zumo lamp?"}] for i in range(n)]


# (prompts, raters, models, overlap, prompts given to two raters: overlap x prompts rounded half up, by hand)
CASES = [
    (40, ["ana", "bo", "cy"], ["m1", "m2"], 0.2, 8),
    (7, ["bo", "cy"], ["m1", "m2"], 0.5, 4),  # 3.5 rounds up
    (10, ["bo", "cy", "dee", "eli"], ["m1", "m2"], 0.25, 3),  # 2.5 rounds up
    (13, ["bo", "cy", "dee", "eli", "fay"], ["m1", "m2", "m3", "m4"], 0.2, 3),  # 2.6: arena-style, 6 pairs
    (9, ["bo"], ["m1", "m2"], 0.0, 0),
    (5, ["bo", "cy"], ["m1", "m2"], 1.0, 5),
]


@pytest.mark.parametrize("n, raters, models, overlap, expected_shared", CASES)
def test_every_prompt_is_assigned_a_share_to_two_different_raters_and_the_work_is_even(n, raters, models, overlap,
                                                                                       expected_shared):
    items = assign(prompts(n), raters, models, overlap, seed=3)
    by_prompt = defaultdict(list)
    for item in items:
        by_prompt[item.prompt_index].append(item)
    assert sorted(by_prompt) == list(range(n))  # every prompt, none invented
    doubled = [index for index, its in by_prompt.items() if len(its) == 2]
    assert len(doubled) == expected_shared and all(len(its) in (1, 2) for its in by_prompt.values())
    for index, its in by_prompt.items():
        assert len({i.rater for i in its}) == len(its)  # two different people on an overlap prompt
        assert all(i.shared == (len(its) == 2) for i in its)
        assert len({frozenset((i.model_left, i.model_right)) for i in its}) == 1  # the same two models for both
        assert all(i.model_left != i.model_right and {i.model_left, i.model_right} <= set(models) for i in its)
    load = Counter(i.rater for i in items)
    assert sum(load.values()) == n + expected_shared
    assert set(load) == set(raters) or n + expected_shared < len(raters)
    assert max(load.values()) - min(load[r] for r in raters) <= 1  # nobody has two items more than another
    for rater in raters:
        mine = [i for i in items if i.rater == rater]
        assert sorted(i.position for i in mine) == list(range(len(mine)))
        if len(models) == 2:  # each model on the left in half (±1) of a rater's items
            assert abs(sum(i.model_left == models[0] for i in mine) * 2 - len(mine)) <= 1


def test_arena_style_tasks_rate_every_pair_about_as_often():
    items = assign(prompts(24), ["bo", "cy"], ["m1", "m2", "m3", "m4"], 0.0, seed=1)
    pairs = Counter(frozenset((i.model_left, i.model_right)) for i in items)
    assert len(pairs) == 6 and set(pairs.values()) == {4}  # 24 prompts, 6 pairs: 4 each


def test_the_assignment_is_seeded():
    args = (prompts(30), ["ana", "bo", "cy"], ["m1", "m2"], 0.2)
    assert assign(*args, seed=7) == assign(*args, seed=7)
    assert assign(*args, seed=7) != assign(*args, seed=8)
    # overlap prompts spread over every pair of raters: 6 prompts for 3 pairs
    shared = defaultdict(set)
    for item in assign(*args, seed=7):
        if item.shared:
            shared[item.prompt_index].add(item.rater)
    assert Counter(frozenset(r) for r in shared.values()) == Counter(
        {frozenset(("ana", "bo")): 2, frozenset(("ana", "cy")): 2, frozenset(("bo", "cy")): 2})


def test_every_problem_with_a_task_is_named_at_once():
    with pytest.raises(TaskError) as caught:
        assign([], ["bo", "bo"], ["m1"], 1.5)
    message = str(caught.value)
    for part in ("prompts: the list is empty", "bo named twice", "a task compares two or more models, 1 given",
                 "overlap: 1.5 is not a share"):
        assert part in message
    with pytest.raises(TaskError, match="one rater cannot share prompts"):
        assign(prompts(10), ["bo"], ["m1", "m2"], 0.2)


# -- the store keeps a task, and the votes on its items -------------------------------------------------------------

def vote_on(store, item, winner: str, rater: str | None = None, link: bool = True) -> int:
    """A vote as the Chat tab stores it for a task item (the item's prompt, its two models in its panes)."""
    return store.add_vote(item["conversation"], item["model_left"], item["model_right"], "left reply",
                          "right reply", winner, rater=rater or item["rater"], task_item=item["id"] if link else None)


def test_a_task_and_its_items_come_back_from_the_store(tmp_path, feedback_db):
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    asked = prompts(10)
    task = create_task(store, "zumo-week-1", asked, [BASE, "zumo-sft"], ["bo", "cy"], 0.2, seed=4,
                       created_by="ana")
    assert (task["name"], task["models"], task["overlap"], task["seed"], task["created_by"], task["items"]) == \
        ("zumo-week-1", [BASE, "zumo-sft"], 0.2, 4, "ana", 12)
    assert store.task("zumo-week-1") == store.task(task["id"]) == task
    stored = store.task_items(task["id"])
    expected = assign(asked, ["bo", "cy"], [BASE, "zumo-sft"], 0.2, seed=4)
    assert [(i["prompt_index"], i["rater"], i["position"], i["model_left"], i["model_right"], i["shared"])
            for i in stored] == [(a.prompt_index, a.rater, a.position, a.model_left, a.model_right, a.shared)
                                 for a in sorted(expected, key=lambda a: (a.rater, a.position))]
    assert all(i["conversation"] == asked[i["prompt_index"]] and not i["done"] for i in stored)
    with pytest.raises(TaskError, match="exists already"):
        create_task(store, "zumo-week-1", asked, [BASE, "zumo-sft"], ["bo", "cy"])
    assert [t["name"] for t in store.tasks()] == ["zumo-week-1"]
    with pytest.raises(Exception, match="no such task .*zumo-week-1"):
        store.task("zumo-week-9")


def test_progress_counts_each_raters_live_votes_on_their_items(tmp_path, feedback_db):
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    task = create_task(store, "t", prompts(6), [BASE, "zumo-sft"], ["bo", "cy"], 0.5, seed=2)
    bo_items = store.task_items(task["id"], rater="bo")
    counted = progress(store.task_items(task["id"]))
    assert sorted(counted) == ["bo", "cy"] and sorted(counted.values()) == [(0, 4), (0, 5)]  # 6 prompts + 3 shared
    total = len(bo_items)
    assert store.next_task_item("bo") == bo_items[0]  # in the rater's order

    first = vote_on(store, bo_items[0], "a")
    assert progress(store.task_items(task["id"]))["bo"] == (1, total)
    assert store.next_task_item("bo")["id"] == bo_items[1]["id"]
    # an unlinked vote on the same prompt (plain chatting) does not count
    vote_on(store, bo_items[1], "b", link=False)
    assert progress(store.task_items(task["id"]))["bo"] == (1, total)
    # a vote on someone else's item is refused and not stored
    before = len(store.ratings())
    with pytest.raises(Exception, match="bo's to rate, not cy's"):
        vote_on(store, bo_items[1], "a", rater="cy")
    assert len(store.ratings()) == before
    # a deleted vote gives the item back
    store.delete(first, reason="misclick")
    assert progress(store.task_items(task["id"]))["bo"] == (0, total)
    assert store.next_task_item("bo")["id"] == bo_items[0]["id"]
    for item in bo_items:
        vote_on(store, item, "tie")
    assert store.next_task_item("bo") is None and progress(store.task_items(task["id"]))["bo"] == (total, total)
    # what the rater's Chat tab says: their progress while items wait, that they are done once none does
    assert next_for(store, "cy")[1] == f"Task **t**: 0 of {9 - total} done"
    assert next_for(store, "bo") == (None, f"Task **t**: all done, {total} of {total} done. Thank you!")
    assert next_for(store, "dee") == (None, "")  # no task names dee
    assert len(store.ratings(task=task["id"])) == total  # the task's votes: the linked ones only
    assert {v["task_item"] for v in store.task_votes(task["id"])} == {i["id"] for i in bo_items}


def test_an_exchange_answers_an_item_only_with_its_prompt_and_models():
    item = {"conversation": [{"role": "user", "content": "Hi?"}], "model_left": f"{BASE}", "model_right":
            "/ws/runs/zumo-sft"}
    asked = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert matches(item, asked, "/ws/runs/zumo-sft", BASE)  # the sides swapped (arena mode) still answer it
    assert not matches(item, [{"role": "user", "content": "Hello?"}], BASE, "/ws/runs/zumo-sft")
    assert not matches(item, asked, BASE, "/ws/runs/other")
    assert not matches(None, asked, BASE, "/ws/runs/zumo-sft")


def test_a_schema_2_file_gains_the_task_tables(tmp_path):
    path = tmp_path / "feedback.sqlite"
    FeedbackStore(path).add_vote(prompts(1)[0], BASE, "zumo-sft", "a", "b", "a", rater="bo")
    with sqlite3.connect(path) as db:  # back to schema 2: as a file of that version has it
        db.executescript("DROP TABLE task_ratings; DROP TABLE task_items; DROP TABLE tasks; PRAGMA user_version = 2;")
    store = FeedbackStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    assert [r["rater"] for r in store.ratings()] == ["bo"] and store.tasks() == []
    create_task(store, "t", prompts(2), [BASE, "zumo-sft"], ["bo"], 0.0)
    assert store.next_task_item("bo")["prompt_index"] in (0, 1)


def test_a_schema_2_postgresql_database_gains_the_task_tables(postgres_db):
    from sqlalchemy import create_engine

    from ftchat.feedback import store as tables
    from ftchat.feedback.store import locate

    engine = create_engine(locate(postgres_db))
    with engine.begin() as db:  # the tables and version that an ftchat of schema 2 made
        tables.schema.create_all(db, tables=[tables.ratings_table, tables.audit_table, tables.round_ratings_table,
                                             tables.users_table, tables.meta_table])
        db.execute(tables.meta_table.insert().values(key="schema_version", value="2"))
        db.execute(tables.ratings_table.insert().values(
            time=1.7e9, kind="vote", conversation=json.dumps(prompts(1)[0]), prompt="Question 0 about the Zumo lamp?",
            model_a=BASE, model_b="zumo-sft", reply_a="a", reply_b="b", winner="a", rater="bo"))
    engine.dispose()
    store = FeedbackStore(postgres_db)
    with psycopg.connect(postgres_db) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
    assert [r["rater"] for r in store.ratings()] == ["bo"] and store.tasks() == []
    task = create_task(store, "t", prompts(2), [BASE, "zumo-sft"], ["bo"], 0.0)
    vote_on(store, store.next_task_item("bo"), "a")
    assert progress(store.task_items(task["id"]))["bo"] == (1, 2)


# -- a rater who votes at random -----------------------------------------------------------------------------------

def random_rater_task(tmp_path, feedback_db=None):
    """A task of 60 prompts for ana, bo and cy, half of them to two raters. ana and bo prefer zumo-sft on every
    prompt but every tenth; cy picks a pane at random (seeded). Returns the store, the task and every vote cast as
    (rater, winning model or tie)."""
    fake_run(tmp_path / "runs", "zumo-sft")
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    task = create_task(store, "random-rater", prompts(60), [BASE, "zumo-sft"], ["ana", "bo", "cy"], 0.5, seed=5)
    coin = random.Random(11)
    cast = []
    for item in store.task_items(task["id"]):
        if item["rater"] == "cy":
            winner = coin.choice("ab")
        else:
            good = "zumo-sft" if item["prompt_index"] % 10 else BASE
            winner = "a" if item["model_left"] == good else "b"
        vote_on(store, item, winner)
        cast.append((item["rater"], item["model_left"] if winner == "a" else item["model_right"]))
    return store, task, cast


def test_the_task_report_flags_the_rater_who_votes_at_random(tmp_path, feedback_db):
    store, task, cast = random_rater_task(tmp_path, feedback_db)
    report = task_report(task, store.task_items(task["id"]), store.task_votes(task["id"]))
    assert report["done"] == report["items"] == 90 and report["overlap_prompts"] == report["overlap_voted"] == 30
    assert report["flagged"] == ["cy"]
    rows = {r["rater"]: r for r in report["raters"]}
    assert [rows[name]["done"] for name in ("ana", "bo", "cy")] == [30, 30, 30]
    assert "disagrees with the others" in rows["cy"]["flags"][0]
    pair = next(p for p in report["pairs"] if (p["rater_a"], p["rater_b"]) == ("ana", "bo"))
    assert pair["agreement"] == 1.0  # the two careful raters agree on every prompt they share
    # the left pane's share of each rater's decisive votes, counted here from what was cast
    for name in ("ana", "bo", "cy"):
        votes = store.task_votes(task["id"])
        mine = [v for v in votes if v["rater"] == name]
        assert rows[name]["left_share"] == pytest.approx(sum(v["winner"] == "a" for v in mine) / len(mine))


def test_leaving_the_flagged_rater_out_changes_the_leaderboard_and_the_round(tmp_path, feedback_db):
    store, _, cast = random_rater_task(tmp_path, feedback_db)
    where = ["--feedback-db", feedback_db] if feedback_db else []
    votes = store.ratings(kind="vote")
    assert flagged_raters(votes) == {"cy"}
    careful = [won for rater, won in cast if rater != "cy"]

    everyone = {r.model: r for r in bradley_terry(votes, bootstrap=0)}
    without = {r.model: r for r in bradley_terry(votes, bootstrap=0, exclude_flagged=True)}
    assert everyone["zumo-sft"].votes == 90 and without["zumo-sft"].votes == len(careful) == 60
    assert without["zumo-sft"].rating > everyone["zumo-sft"].rating  # cy's coin flips pulled it towards even
    code, out, _ = ftchat_main("feedback", "leaderboard", "--json", "--exclude-flagged", "--workspace", tmp_path,
                               *where)
    assert code == 0 and {r["model"]: r["votes"] for r in json.loads(out)} == {BASE: 60, "zumo-sft": 60}

    config = next_round_config(tmp_path, "zumo-sft", "dpo", exclude_flagged=True, feedback_db=feedback_db)
    pairs = [json.loads(line) for line in open(config.data[0])]
    assert len(pairs) == 60  # ana's and bo's votes, each decisive
    used = store.ratings(round=config.out.rsplit("/", 1)[-1])
    assert {r["rater"] for r in used} == {"ana", "bo"} and len(used) == 60
    everything = next_round_config(tmp_path, "zumo-sft", "dpo", feedback_db=feedback_db)
    assert sum(1 for _ in open(everything.data[0])) == 90


# -- the shell --------------------------------------------------------------------------------------------------------

def test_the_shell_creates_lists_and_reports_a_task(tmp_path, feedback_db):
    """The team and the task in the workspace (users.json, feedback.sqlite), or both in one PostgreSQL database."""
    fake_run(tmp_path / "runs", "zumo-sft")
    users = open_users(tmp_path, feedback_db)
    for name, role in (("ana", "admin"), ("bo", "rater"), ("cy", "rater")):
        users.add(name, role, f"{name}-s-long-password")
    listed = tmp_path / "prompts.txt"
    listed.write_text("".join(f"Question {i}?\n" for i in range(10)))
    where = ["--workspace", tmp_path] + (["--feedback-db", feedback_db] if feedback_db else [])

    code, out, err = ftchat_main("task", "create", "--prompts", listed, "--models", "zumo-sft", BASE, *where)
    assert (code, err) == (0, "")
    assert out.startswith("task prompts (id 1): 10 prompts, 2 of them to two raters; bo 6, cy 6")
    code, _, err = ftchat_main("task", "create", "--prompts", listed, "--models", "zumo-sft", "nope", "--raters",
                               "bo", "zed", "--name", "second", *where)
    assert code == 1 and f"zed not in {users.where}" in err and users.option in err
    code, _, err = ftchat_main("task", "create", "--prompts", listed, "--models", "zumo-sft", "nope", "--name",
                               "second", *where)
    assert code == 1 and "models: nope not offered" in err
    assert (tmp_path / "feedback.sqlite").exists() == (feedback_db is None)

    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    item = store.next_task_item("cy")
    vote_on(store, item, "a")
    code, out, _ = ftchat_main("task", "list", *where)
    assert code == 0 and out.split("\t")[:3] == ["1", "prompts", "1 of 12 done"]
    code, out, _ = ftchat_main("task", "status", "prompts", "--json", *where)
    report = json.loads(out)
    assert {r["rater"]: (r["done"], r["assigned"]) for r in report["raters"]} == {"bo": (0, 6), "cy": (1, 6)}
    code, out, _ = ftchat_main("task", "status", "1", *where)
    assert code == 0 and "prompts: 1 of 12 items done" in out and "cy" in out
