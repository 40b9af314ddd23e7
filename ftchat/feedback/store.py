"""The ratings people give while chatting, in SQLite: the only module of ftchat that talks to the database.

WORKSPACE/feedback.sqlite (WAL mode, `PRAGMA user_version` = SCHEMA_VERSION):

  ratings  one row per vote, thumb or edited answer (see `add_vote`, `add_thumb`, `add_edit`);
           a deleted rating keeps its row with `deleted` = 1
  audit    one row per deletion (and per import), never erased
  round_ratings  which ratings each training round was built from (schema 2), so the ratings a round has not
           used yet can be told apart from those it trained on
  tasks, task_items, task_ratings  rating tasks (schema 3): prompts shared out among raters (ftchat.feedback.tasks),
           one item per prompt and rater, and which votes were cast on which item

Every write is one transaction on a fresh connection, so any number of threads and processes may write at once
(SQLite serialises them; `busy_timeout` makes a writer wait its turn instead of failing) and a rating that a call
has returned the id of survives a kill -9 of the process.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

SCHEMA_VERSION = 3  # 2: round_ratings, 3: rating tasks (older files gain the tables when opened)
RATING_KINDS = ("vote", "thumb", "edit")
WINNERS = ("a", "b", "tie", "bothbad")
SIDES = ("a", "b")  # a: the left pane, b: the right pane
BUSY_TIMEOUT_S = 60.0
# The marker of ftchat's own ratings export (export.write_export(kind="ratings")); ftchat.feedback.imports reads it back.
RATINGS_FORMAT = "ftchat-ratings-1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    time         REAL    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('vote', 'thumb', 'edit')),
    conversation TEXT    NOT NULL,            -- JSON list of messages, ending with the user's prompt
    prompt       TEXT    NOT NULL,            -- the last user message
    model_a      TEXT    NOT NULL,            -- run folder name, or base:NAME
    model_b      TEXT,                        -- votes only
    hash_a       TEXT,                        -- sha256 of the weights files (weights_hash)
    hash_b       TEXT,
    reply_a      TEXT    NOT NULL,
    reply_b      TEXT,
    winner       TEXT    CHECK (winner IN ('a', 'b', 'tie', 'bothbad')),   -- votes
    thumb        INTEGER CHECK (thumb IN (1, -1)),                        -- thumbs
    edit         TEXT,                                                    -- edits: the better answer
    side         TEXT    CHECK (side IN ('a', 'b')),                      -- thumbs / edits: the pane rated
    settings     TEXT,                        -- JSON generation settings
    rater        TEXT,
    anonymous    INTEGER NOT NULL DEFAULT 0,  -- arena mode: names hidden until the vote
    source       TEXT    NOT NULL DEFAULT 'ftchat' CHECK (source IN ('ftchat', 'import')),
    origin       TEXT,                        -- imports: file:line
    import_key   TEXT    UNIQUE,              -- imports: sha256 of the record, so a file imported twice counts once
    deleted      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ratings_model_a ON ratings (model_a);
CREATE INDEX IF NOT EXISTS ratings_model_b ON ratings (model_b);
CREATE TABLE IF NOT EXISTS audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time      REAL    NOT NULL,
    action    TEXT    NOT NULL,              -- delete | import
    rating_id INTEGER,
    detail    TEXT                           -- JSON: reason, file, counts
);
CREATE TABLE IF NOT EXISTS round_ratings (
    round     TEXT    NOT NULL,              -- the round's run folder name
    rating_id INTEGER NOT NULL REFERENCES ratings (id),
    time      REAL    NOT NULL,
    PRIMARY KEY (round, rating_id)
);
-- rating tasks --
CREATE TABLE IF NOT EXISTS tasks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    time       REAL    NOT NULL,
    models     TEXT    NOT NULL,              -- JSON list of the chat choices rated (2, or more: a pair per prompt)
    overlap    REAL    NOT NULL,              -- the share of prompts given to two raters
    seed       INTEGER NOT NULL,
    created_by TEXT
);
CREATE TABLE IF NOT EXISTS task_items (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task         INTEGER NOT NULL REFERENCES tasks (id),
    prompt_index INTEGER NOT NULL,            -- the prompt's place in the task's list: two items share an overlap one
    conversation TEXT    NOT NULL,            -- JSON list of messages, ending with the user's prompt
    rater        TEXT    NOT NULL,
    position     INTEGER NOT NULL,            -- the rater's order of work, from 0
    model_left   TEXT    NOT NULL,            -- chat choices (base:NAME or a run folder)
    model_right  TEXT    NOT NULL,
    shared       INTEGER NOT NULL DEFAULT 0,  -- 1: an overlap prompt, rated by two raters
    UNIQUE (task, prompt_index, rater)
);
CREATE INDEX IF NOT EXISTS task_items_rater ON task_items (rater, task, position);
CREATE TABLE IF NOT EXISTS task_ratings (
    item      INTEGER NOT NULL REFERENCES task_items (id),
    rating_id INTEGER NOT NULL REFERENCES ratings (id),
    PRIMARY KEY (item, rating_id)
);
-- end of rating tasks --
"""
UNUSED = "-"  # ratings(round=UNUSED): the ratings no round has been built from yet
JSON_COLUMNS = ("conversation", "settings")


class FeedbackError(ValueError):
    """A rating cannot be stored or read as asked; the message names the field and what would fix it."""


def prompt_text(conversation: list[dict]) -> str:
    """The text of the last user message of a conversation."""
    for message in reversed(conversation):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def check_conversation(conversation, where: str = "conversation") -> list[dict]:
    """The conversation as plain {"role", "content"} dicts ending with a user turn, or FeedbackError."""
    if not isinstance(conversation, list) or not conversation:
        raise FeedbackError(f"{where}: give the messages up to the prompt as a non-empty list.")
    clean = []
    for i, message in enumerate(conversation):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise FeedbackError(f"{where}[{i}]: a message needs a role of system, user or assistant.")
        content = message.get("content")
        if not isinstance(content, str):
            raise FeedbackError(f"{where}[{i}]: content must be text.")
        clean.append({"role": message["role"], "content": content})
    if clean[-1]["role"] != "user":
        raise FeedbackError(f"{where}: must end with the user's prompt, ends with {clean[-1]['role']}.")
    return clean


class FeedbackStore:
    """Ratings in one SQLite file. Cheap to create: every call opens its own connection."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._check_readable()  # before anything below writes to it (journal mode, schema)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:  # a damaged or foreign file: one sentence, never a traceback
            raise FeedbackError(f"{self.path}: is not a ratings database ftchat can read ({exc}); move it aside "
                                "to start a new one, or restore it from a backup.") from None

    def _open(self) -> None:
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                with db:
                    db.executescript("BEGIN IMMEDIATE;" + SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};"
                                     "COMMIT;")

    def _check_readable(self) -> None:
        """FeedbackError, naming the file and what to do, when it is not a ratings file this ftchat can read: not
        SQLite, damaged or truncated, or from a newer schema. Read through a read-only connection, never with open():
        closing any other descriptor of the file drops the SQLite locks this process's other connections hold (POSIX
        advisory locks), and concurrent writers then failed with "disk I/O error"."""
        aside = (f"Move it aside (e.g. rename it to {self.path.name}.bad) and ftchat starts a new, empty one; keep the "
                 "old file to recover its ratings")
        try:
            with closing(sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                         timeout=BUSY_TIMEOUT_S)) as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise FeedbackError(f"{self.path} was written by a newer ftchat (schema {version} > "
                                        f"{SCHEMA_VERSION}); update ftchat to read it, or move it aside (e.g. "
                                        f"rename it to {self.path.name}.bad) to start a new one here.")
                problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    raise FeedbackError(f"{self.path} is damaged ({'; '.join(problems)}). {aside} with "
                                        "sqlite3's .recover.")
        except sqlite3.DatabaseError as exc:
            raise FeedbackError(f"{self.path} is damaged, truncated or not an SQLite database ({exc}). {aside} with "
                                "sqlite3's .recover.") from None

    @classmethod
    def for_workspace(cls, workspace: str | os.PathLike) -> "FeedbackStore":
        return cls(Path(workspace) / "feedback.sqlite")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA synchronous = FULL")  # a returned id is on disk, whatever happens next
        db.row_factory = sqlite3.Row
        return db

    def _insert(self, values: dict, task_item: int | None = None) -> int:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute(f"INSERT INTO ratings ({columns}) VALUES ({marks})", list(values.values()))
                if task_item is not None:
                    self._link_task_vote(db, int(task_item), int(cursor.lastrowid), values["rater"])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(cursor.lastrowid)

    # -- writing ------------------------------------------------------------------------------------------------
    def _common(self, conversation, settings, rater, anonymous, when) -> dict:
        conversation = check_conversation(conversation)
        return {
            "time": time.time() if when is None else float(when),
            "conversation": json.dumps(conversation, ensure_ascii=False),
            "prompt": prompt_text(conversation),
            "settings": json.dumps(settings, ensure_ascii=False, default=str) if settings is not None else None,
            "rater": (rater or "").strip() or None,
            "anonymous": int(bool(anonymous)),
        }

    def add_vote(self, conversation: list[dict], model_a: str, model_b: str, reply_a: str, reply_b: str,
                 winner: str, settings: dict | None = None, rater: str | None = None, anonymous: bool = False,
                 hash_a: str | None = None, hash_b: str | None = None, when: float | None = None,
                 task_item: int | None = None) -> int:
        """Store one vote between two replies to the same conversation; returns its id once it is on disk.
        `task_item`: the id of the rating-task item the vote answers (the rater's own), linked in the same
        transaction."""
        if winner not in WINNERS:
            raise FeedbackError(f"winner: '{winner}' is not one of {', '.join(WINNERS)}.")
        _check_model(model_a, "model_a")
        _check_model(model_b, "model_b")
        values = self._common(conversation, settings, rater, anonymous, when)
        values.update(kind="vote", model_a=model_a, model_b=model_b, hash_a=hash_a, hash_b=hash_b,
                      reply_a=str(reply_a), reply_b=str(reply_b), winner=winner)
        return self._insert(values, task_item)

    def add_thumb(self, conversation: list[dict], model: str, reply: str, up: bool, side: str | None = None,
                  settings: dict | None = None, rater: str | None = None, anonymous: bool = False,
                  hash: str | None = None, when: float | None = None) -> int:
        """Store a thumbs up (up=True) or down for one reply; returns its id."""
        _check_model(model, "model")
        _check_side(side)
        values = self._common(conversation, settings, rater, anonymous, when)
        values.update(kind="thumb", model_a=model, hash_a=hash, reply_a=str(reply), thumb=1 if up else -1,
                      side=side)
        return self._insert(values)

    def add_edit(self, conversation: list[dict], model: str, reply: str, better: str, side: str | None = None,
                 settings: dict | None = None, rater: str | None = None, anonymous: bool = False,
                 hash: str | None = None, when: float | None = None) -> int:
        """Store a better answer a person wrote in place of a model's reply; returns its id."""
        _check_model(model, "model")
        _check_side(side)
        if not isinstance(better, str) or not better.strip():
            raise FeedbackError("better: the written answer is empty; type the answer you would have wanted.")
        values = self._common(conversation, settings, rater, anonymous, when)
        values.update(kind="edit", model_a=model, hash_a=hash, reply_a=str(reply), edit=better.strip(), side=side)
        return self._insert(values)

    def delete(self, rating_id: int, reason: str | None = None) -> None:
        """Mark a rating deleted (exports and the leaderboard leave it out) and record why in the audit table."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT deleted FROM ratings WHERE id = ?", (int(rating_id),)).fetchone()
                if row is None:
                    raise FeedbackError(f"rating {rating_id}: no such rating.")
                if not row["deleted"]:
                    db.execute("UPDATE ratings SET deleted = 1 WHERE id = ?", (int(rating_id),))
                    db.execute("INSERT INTO audit (time, action, rating_id, detail) VALUES (?, 'delete', ?, ?)",
                               (time.time(), int(rating_id), json.dumps({"reason": reason}, ensure_ascii=False)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def mark_used(self, round_name: str, rating_ids) -> None:
        """Record that the round `round_name` was built from these ratings (one transaction; repeats are kept once)."""
        now = time.time()
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO round_ratings (round, rating_id, time) VALUES (?, ?, ?)",
                               [(round_name, int(i), now) for i in rating_ids])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def unused_count(self) -> int:
        """How many live ratings no round has been built from yet."""
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM ratings WHERE deleted = 0 AND id NOT IN "
                                  "(SELECT rating_id FROM round_ratings)").fetchone()[0])

    def rounds_used(self) -> list[tuple[str, int]]:
        """(round, number of live ratings it was built from), oldest round first."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT u.round, COUNT(r.id) FROM round_ratings u JOIN ratings r ON r.id = u.rating_id "
                              "WHERE r.deleted = 0 GROUP BY u.round ORDER BY MIN(u.time), u.round").fetchall()
        return [(row[0], int(row[1])) for row in rows]

    # -- reading ------------------------------------------------------------------------------------------------
    def ratings(self, model: str | None = None, rater: str | None = None, kind: str | None = None,
                round: str | None = None, include_deleted: bool = False, source: str | None = None,
                anonymous: bool | None = None, task: int | None = None) -> list[dict]:
        """Ratings as dicts (conversation and settings parsed), oldest first. `model` matches either side;
        `round` is a round's run name (the ratings it was built from) or UNUSED (those no round used yet);
        `source` is where a rating came from ('ftchat' or 'import'); `task` a rating task's id (its votes)."""
        where, params = [], []
        if model:
            where.append("(model_a = ? OR model_b = ?)")
            params += [model, model]
        if rater:
            where.append("rater = ?")
            params.append(rater)
        if kind:
            if kind not in RATING_KINDS:
                raise FeedbackError(f"kind: '{kind}' is not one of {', '.join(RATING_KINDS)}.")
            where.append("kind = ?")
            params.append(kind)
        if round == UNUSED:
            where.append("id NOT IN (SELECT rating_id FROM round_ratings)")
        elif round:
            where.append("id IN (SELECT rating_id FROM round_ratings WHERE round = ?)")
            params.append(round)
        if source:
            where.append("source = ?")
            params.append(source)
        if anonymous is not None:
            where.append("anonymous = ?")
            params.append(int(bool(anonymous)))
        if task is not None:
            where.append(f"id IN ({self.TASK_RATING_IDS})")
            params.append(int(task))
        if not include_deleted:
            where.append("deleted = 0")
        sql = "SELECT * FROM ratings" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with closing(self._connect()) as db:
            return [_row_dict(row) for row in db.execute(sql, params)]

    def get(self, rating_id: int) -> dict:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM ratings WHERE id = ?", (int(rating_id),)).fetchone()
        if row is None:
            raise FeedbackError(f"rating {rating_id}: no such rating.")
        return _row_dict(row)

    def counts(self, **filters) -> dict:
        """Numbers for the Feedback tab: total, per kind, per vote outcome, per model, deleted (same filters as
        `ratings`)."""
        rows = self.ratings(**{**filters, "include_deleted": True})
        live = [r for r in rows if not r["deleted"]]
        per_model: dict[str, int] = {}
        for r in live:
            for name in (r["model_a"], r["model_b"]):
                if name:
                    per_model[name] = per_model.get(name, 0) + 1
        return {
            "total": len(live),
            "deleted": len(rows) - len(live),
            "kinds": {k: sum(r["kind"] == k for r in live) for k in RATING_KINDS},
            "winners": {w: sum(r["winner"] == w for r in live) for w in WINNERS},
            "thumbs": {"up": sum(r["thumb"] == 1 for r in live), "down": sum(r["thumb"] == -1 for r in live)},
            "models": dict(sorted(per_model.items(), key=lambda item: -item[1])),
            "raters": sorted({r["rater"] for r in live if r["rater"]}),
        }

    def models(self) -> list[str]:
        """Every model name that appears in a live rating."""
        with closing(self._connect()) as db:
            names = db.execute("SELECT model_a FROM ratings WHERE deleted = 0 UNION "
                               "SELECT model_b FROM ratings WHERE deleted = 0 AND model_b IS NOT NULL").fetchall()
        return sorted(n[0] for n in names)

    def audit(self) -> list[dict]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM audit ORDER BY id").fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    # -- import -------------------------------------------------------------------------------------------------
    def add_imported(self, rows: list[dict], file: str, format: str | None, skipped: int) -> tuple[int, int]:
        """Store rows that ftchat.feedback.imports parsed from one file, in one transaction with its audit row;
        (added, duplicates): a row whose import_key is there already is counted once."""
        added = duplicates = 0
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for values in rows:
                    cursor = db.execute(
                        f"INSERT OR IGNORE INTO ratings ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
                        list(values.values()))
                    if cursor.rowcount:
                        added += 1
                    else:
                        duplicates += 1
                db.execute("INSERT INTO audit (time, action, rating_id, detail) VALUES (?, 'import', NULL, ?)",
                           (time.time(), json.dumps({"file": file, "format": format, "added": added,
                                                     "duplicates": duplicates, "skipped": skipped})))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return added, duplicates

    # -- rating tasks --------------------------------------------------------------------------------------------
    # Plain SQL on purpose (no upsert, no RETURNING, no SQLite functions), so that it ports as it is.
    # An item is done once a live vote is linked to it (task_items, next_task_item).
    ITEM_VOTES = ("(SELECT COUNT(*) FROM task_ratings l JOIN ratings r ON r.id = l.rating_id "
                  "WHERE l.item = i.id AND r.deleted = 0)")
    # The ids of a task's votes (ratings(task=...)).
    TASK_RATING_IDS = "SELECT l.rating_id FROM task_ratings l JOIN task_items i ON i.id = l.item WHERE i.task = ?"

    def add_task(self, name: str, models: list[str], overlap: float, seed: int, items: list[dict],
                 created_by: str | None = None) -> int:
        """Store a task and its items (dicts of prompt_index, conversation, rater, position, model_left,
        model_right, shared) in one transaction; returns the task's id. FeedbackError when the name is taken."""
        name = (name or "").strip()
        if not name:
            raise FeedbackError("task name: give the task a name.")
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT id FROM tasks WHERE name = ?", (name,)).fetchone() is not None:
                    raise FeedbackError(f"task {name!r} exists already; give the new task another name.")
                cursor = db.execute("INSERT INTO tasks (name, time, models, overlap, seed, created_by) "
                                    "VALUES (?, ?, ?, ?, ?, ?)",
                                    (name, time.time(), json.dumps(list(models), ensure_ascii=False), float(overlap),
                                     int(seed), created_by))
                task_id = int(cursor.lastrowid)
                db.executemany(
                    "INSERT INTO task_items (task, prompt_index, conversation, rater, position, model_left, "
                    "model_right, shared) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(task_id, int(item["prompt_index"]),
                      json.dumps(check_conversation(item["conversation"], f"prompt {item['prompt_index'] + 1}"),
                                 ensure_ascii=False),
                      item["rater"], int(item["position"]), item["model_left"], item["model_right"],
                      int(bool(item["shared"]))) for item in items])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return task_id

    def tasks(self) -> list[dict]:
        """Every task (models parsed) with its number of items, oldest first."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT t.id, t.name, t.time, t.models, t.overlap, t.seed, t.created_by, "
                              "COUNT(i.id) AS items FROM tasks t LEFT JOIN task_items i ON i.task = t.id "
                              "GROUP BY t.id, t.name, t.time, t.models, t.overlap, t.seed, t.created_by "
                              "ORDER BY t.id").fetchall()
        return [{**dict(r), "models": json.loads(r["models"])} for r in rows]

    def task(self, key: int | str) -> dict:
        """One task by its id (an int), or by its name or id as typed; FeedbackError naming the tasks there are when
        there is none."""
        every = self.tasks()
        by_id = {t["id"]: t for t in every}
        if isinstance(key, int) and key in by_id:
            return by_id[key]
        typed = str(key).strip()
        for task in every:
            if task["name"] == typed:
                return task
        if typed.isdigit() and int(typed) in by_id:
            return by_id[int(typed)]
        raise FeedbackError(f"task {key!r}: no such task (tasks: {', '.join(t['name'] for t in every) or 'none yet'}).")

    def task_items(self, task_id: int, rater: str | None = None) -> list[dict]:
        """The items of a task (of one rater), by rater and position; each with `votes`: its live linked votes."""
        sql = f"SELECT i.*, {self.ITEM_VOTES} AS votes FROM task_items i WHERE i.task = ?"
        params: list = [int(task_id)]
        if rater is not None:
            sql += " AND i.rater = ?"
            params.append(rater)
        with closing(self._connect()) as db:
            return [_item_dict(r) for r in db.execute(sql + " ORDER BY i.rater, i.position", params)]

    def next_task_item(self, rater: str) -> dict | None:
        """The rater's next item without a live vote: the oldest task's first by position; None when all are done."""
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT i.*, {self.ITEM_VOTES} AS votes FROM task_items i WHERE i.rater = ? AND "
                             f"{self.ITEM_VOTES} = 0 ORDER BY i.task, i.position LIMIT 1", (rater,)).fetchone()
        return _item_dict(row) if row is not None else None

    def task_votes(self, task_id: int) -> list[dict]:
        """The live votes cast on a task's items, oldest first: rating dicts with `task_item`, `prompt_index` and
        `shared` (whether two raters have the prompt)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT r.*, i.id AS task_item, i.prompt_index AS prompt_index, i.shared AS shared "
                              "FROM ratings r JOIN task_ratings l ON l.rating_id = r.id "
                              "JOIN task_items i ON i.id = l.item WHERE i.task = ? AND r.deleted = 0 ORDER BY r.id",
                              (int(task_id),)).fetchall()
        return [{**_row_dict(r), "shared": bool(r["shared"])} for r in rows]

    @staticmethod
    def _link_task_vote(db: sqlite3.Connection, item_id: int, rating_id: int, rater: str | None) -> None:
        """Link a vote to a task item inside the vote's transaction: only the item's own rater's vote counts."""
        item = db.execute("SELECT rater FROM task_items WHERE id = ?", (item_id,)).fetchone()
        if item is None:
            raise FeedbackError(f"task item {item_id}: no such item.")
        if item["rater"] != rater:
            raise FeedbackError(f"task item {item_id} is {item['rater']}'s to rate, not "
                                f"{rater or 'an unnamed rater'}'s.")
        db.execute("INSERT INTO task_ratings (item, rating_id) VALUES (?, ?)", (item_id, rating_id))
    # -- end of rating tasks -------------------------------------------------------------------------------------


def _item_dict(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["conversation"] = json.loads(out["conversation"])
    out["shared"] = bool(out["shared"])
    out["done"] = bool(out.get("votes"))
    return out


def _row_dict(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in JSON_COLUMNS:
        out[key] = json.loads(out[key]) if out[key] else ([] if key == "conversation" else None)
    out["anonymous"] = bool(out["anonymous"])
    out["deleted"] = bool(out["deleted"])
    out.pop("import_key", None)
    return out


def _check_model(name, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise FeedbackError(f"{what}: name the model (a run folder name, or base:NAME).")


def _check_side(side) -> None:
    if side is not None and side not in SIDES:
        raise FeedbackError(f"side: '{side}' is not 'a' (left) or 'b' (right).")


def import_key(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
