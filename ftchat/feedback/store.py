"""The ratings people give while chatting, and the team that gives them: the only module of ftchat that talks to a
database.

One schema (the Tables below) and one set of queries (SQLAlchemy Core) for two homes:
- SQLite, WORKSPACE/feedback.sqlite unless told otherwise: one machine, nothing to install (WAL mode,
  `PRAGMA user_version` = SCHEMA_VERSION);
- PostgreSQL, `--feedback-db postgresql://user@host:port/db`: several app processes, on one machine or several, serve
  one rating team. The version is in `meta`, and the team's logins are in `users` (a SQLite workspace keeps them in
  WORKSPACE/users.json: ftchat.users).

  ratings  one row per vote, thumb or edited answer (see `add_vote`, `add_thumb`, `add_edit`);
           a deleted rating keeps its row with `deleted` = 1
  audit    one row per deletion (and per import), never erased
  round_ratings  which ratings each training round was built from (schema 2), so the ratings a round has not
           used yet can be told apart from those it trained on
  tasks, task_items, task_ratings  rating tasks (schema 3): prompts shared out among raters (ftchat.feedback.tasks),
           one item per prompt and rater, and which votes were cast on which item

Every write is one transaction, so any number of threads and processes may write at once (SQLite serialises them,
`busy_timeout` making a writer wait its turn instead of failing; PostgreSQL runs them side by side), and a rating that
a call has returned the id of survives a kill -9 of the process.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from sqlalchemy import (BigInteger, CheckConstraint, Column, Double, Engine, ForeignKey, Index, Integer, MetaData,
                        PrimaryKeyConstraint, Table, Text, UniqueConstraint, create_engine, event, func, inspect, or_,
                        select, text, union, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

SCHEMA_VERSION = 3  # 2: round_ratings, 3: rating tasks (older files and databases gain the tables when opened)
RATING_KINDS = ("vote", "thumb", "edit")
WINNERS = ("a", "b", "tie", "bothbad")
SIDES = ("a", "b")  # a: the left pane, b: the right pane
ROLES = ("admin", "rater")  # of the team's users (ftchat.users)
BUSY_TIMEOUT_S = 60.0
# How long a call waits for a PostgreSQL server that is down or restarting (`pg_ctl restart -m fast` takes a second
# or two) before it fails with FeedbackError.
RECONNECT_S = 10.0
CONNECT_TIMEOUT_S = 5  # one attempt to reach the server
# The marker of ftchat's own ratings export (export.write_export(kind="ratings")); ftchat.feedback.imports reads it back.
RATINGS_FORMAT = "ftchat-ratings-1"
FEEDBACK_FILE = "feedback.sqlite"  # a workspace's ratings without --feedback-db
UNUSED = "-"  # ratings(round=UNUSED): the ratings no round has been built from yet
JSON_COLUMNS = ("conversation", "settings")


def _one_of(column: str, values: tuple) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})")


schema = MetaData()
ratings_table = Table(
    "ratings", schema,
    Column("id", Integer, primary_key=True),
    Column("time", Double, nullable=False),
    Column("kind", Text, _one_of("kind", RATING_KINDS), nullable=False),
    Column("conversation", Text, nullable=False),  # JSON list of messages, ending with the user's prompt
    Column("prompt", Text, nullable=False),  # the last user message
    Column("model_a", Text, nullable=False),  # run folder name, or base:NAME
    Column("model_b", Text),  # votes only
    Column("hash_a", Text),  # sha256 of the weights files (weights_hash)
    Column("hash_b", Text),
    Column("reply_a", Text, nullable=False),
    Column("reply_b", Text),
    Column("winner", Text, _one_of("winner", WINNERS)),  # votes
    Column("thumb", Integer, _one_of("thumb", (1, -1))),  # thumbs
    Column("edit", Text),  # edits: the better answer
    Column("side", Text, _one_of("side", SIDES)),  # thumbs / edits: the pane rated
    Column("settings", Text),  # JSON generation settings
    Column("rater", Text),
    Column("anonymous", Integer, nullable=False, server_default=text("0")),  # arena mode: names hidden until the vote
    Column("source", Text, _one_of("source", ("ftchat", "import")), nullable=False, server_default="ftchat"),
    Column("origin", Text),  # imports: file:line
    Column("import_key", Text, unique=True),  # imports: sha256 of the record, so a file imported twice counts once
    Column("deleted", Integer, nullable=False, server_default=text("0")),
    Index("ratings_model_a", "model_a"),
    Index("ratings_model_b", "model_b"),
    sqlite_autoincrement=True,  # an id is never given twice, as in the files written before SQLAlchemy
)
audit_table = Table(
    "audit", schema,
    Column("id", Integer, primary_key=True),
    Column("time", Double, nullable=False),
    Column("action", Text, nullable=False),  # delete | import
    Column("rating_id", Integer),
    Column("detail", Text),  # JSON: reason, file, counts
    sqlite_autoincrement=True,
)
round_ratings_table = Table(
    "round_ratings", schema,
    Column("round", Text, nullable=False),  # the round's run folder name
    Column("rating_id", Integer, ForeignKey("ratings.id"), nullable=False),
    Column("time", Double, nullable=False),
    PrimaryKeyConstraint("round", "rating_id"),
)
users_table = Table(
    "users", schema,
    Column("name", Text, primary_key=True),
    Column("role", Text, _one_of("role", ROLES), nullable=False),
    Column("hash", Text, nullable=False),  # Argon2id, with its salt (ftchat.users)
)
meta_table = Table(
    "meta", schema,
    Column("key", Text, primary_key=True),  # schema_version
    Column("value", Text, nullable=False),
)
# -- rating tasks --
tasks_table = Table(
    "tasks", schema,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("time", Double, nullable=False),
    Column("models", Text, nullable=False),  # JSON list of the chat choices rated (2, or more: a pair per prompt)
    Column("overlap", Double, nullable=False),  # the share of prompts given to two raters
    Column("seed", BigInteger, nullable=False),  # any Python int a person types (PostgreSQL's INTEGER is 32-bit)
    Column("created_by", Text),
    sqlite_autoincrement=True,
)
task_items_table = Table(
    "task_items", schema,
    Column("id", Integer, primary_key=True),
    Column("task", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("prompt_index", Integer, nullable=False),  # the prompt's place in the list (an overlap one: two items)
    Column("conversation", Text, nullable=False),  # JSON list of messages, ending with the user's prompt
    Column("rater", Text, nullable=False),
    Column("position", Integer, nullable=False),  # the rater's order of work, from 0
    Column("model_left", Text, nullable=False),  # chat choices (base:NAME or a run folder)
    Column("model_right", Text, nullable=False),
    Column("shared", Integer, nullable=False, server_default=text("0")),  # 1: an overlap prompt, rated by two raters
    UniqueConstraint("task", "prompt_index", "rater"),
    Index("task_items_rater", "rater", "task", "position"),
    sqlite_autoincrement=True,
)
task_ratings_table = Table(
    "task_ratings", schema,
    Column("item", Integer, ForeignKey("task_items.id"), nullable=False),
    Column("rating_id", Integer, ForeignKey("ratings.id"), nullable=False),
    PrimaryKeyConstraint("item", "rating_id"),
)
# -- end of rating tasks --
# A SQLite file holds the ratings only: its team is WORKSPACE/users.json and its version PRAGMA user_version.
SQLITE_TABLES = (ratings_table, audit_table, round_ratings_table, tasks_table, task_items_table, task_ratings_table)
# Any number taken from nowhere else: pg_advisory_xact_lock's key for "ftchat is creating its tables".
SCHEMA_LOCK = 0x667463686174

_WRITE = "ftchat_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
_engines: dict[tuple[int, str], Engine] = {}
_ready: set[tuple[int, str]] = set()  # PostgreSQL databases whose schema this process has checked
_engines_lock = threading.Lock()


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


# -- where the ratings are -------------------------------------------------------------------------------------------
def without_password(text: str) -> str:
    """A URL (or a message quoting one) with any password left out: what ftchat may print."""
    return re.sub(r"(://[^/:@\s]*):[^@/\s]*@", r"\1@", text)


def locate(database: str | os.PathLike) -> Path | URL:
    """A SQLite file's path, or a PostgreSQL URL (driver psycopg), from a path or a --feedback-db URL
    (postgresql://user@host:port/db, or sqlite:///FILE)."""
    if not isinstance(database, str) or "://" not in database:
        return Path(database)
    wanted = "give postgresql://user@host:port/db, or sqlite:///FILE for a SQLite file"
    try:
        url = make_url(database)
    except ArgumentError:
        raise FeedbackError(f"--feedback-db: {without_password(database)} is not a database URL; {wanted}.") from None
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database:
        return Path(url.database)
    if backend in ("postgresql", "postgres") and url.database:
        return url.set(drivername="postgresql+psycopg")
    raise FeedbackError(f"--feedback-db: ftchat cannot keep ratings in {without_password(database)}; {wanted}.")


def _engine_key(where: Path | URL) -> tuple[int, str]:
    # per process: a pooled connection must not cross a fork
    return os.getpid(), os.path.abspath(where) if isinstance(where, Path) else where.render_as_string(False)


def _engine(where: Path | URL) -> Engine:
    """The process's one Engine for a database, made on first use."""
    key = _engine_key(where)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = _sqlite_engine(where) if isinstance(where, Path) else create_engine(
                where, pool_pre_ping=True,  # a connection the server dropped (a restart) is replaced, not used
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        return _engines[key]


def _sqlite_engine(path: Path) -> Engine:
    # NullPool: a connection per call, as cheap as opening the file. A pooled one would keep the file open, and a file
    # moved aside (as FeedbackError advises) would go on receiving this process's votes.
    engine = create_engine(URL.create("sqlite", database=str(path)), poolclass=NullPool,
                           connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def settings(connection, _record):
        connection.isolation_level = None  # transactions begin in `begin` below, not when the driver guesses
        for pragma in (f"busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}",
                       "journal_mode = WAL",  # persistent: readers never block the writer
                       "synchronous = FULL"):  # a returned id is on disk, whatever happens next
            connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def begin(connection):
        # A writer takes the write lock at BEGIN and so waits its turn there (busy_timeout); a deferred BEGIN that
        # turns into a write fails at once with "database is locked" when another writer went first.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


def _reason(exc: DBAPIError) -> str:
    """The driver's first line about a failure, without a password."""
    lines = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
    return without_password(lines[0].removeprefix("connection failed: "))


class FeedbackStore:
    """Ratings in one SQLite file or PostgreSQL database. Cheap to create: the process keeps one Engine per database,
    and checks a PostgreSQL database's schema once."""

    def __init__(self, database: str | os.PathLike):
        where = locate(database)
        self.postgres = not isinstance(where, Path)
        if self.postgres:
            self.path, self.name = None, without_password(where.set(drivername="postgresql").render_as_string(False))
            self._engine = _engine(where)
            key = _engine_key(where)
            if key not in _ready:
                self._run(self._create_postgres_schema, write=True)
                _ready.add(key)
            return
        self.path, self.name = where, str(where)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._check_readable()  # before anything below writes to it (journal mode, schema)
        self._engine = _engine(where)
        try:
            if self._run(lambda db: db.exec_driver_sql("PRAGMA user_version").scalar()) < SCHEMA_VERSION:
                self._run(self._create_sqlite_schema, write=True)
        except DBAPIError as exc:  # a damaged or foreign file: one sentence, never a traceback
            raise FeedbackError(f"{self.path}: is not a ratings database ftchat can read ({exc.orig}); move it aside "
                                "to start a new one, or restore it from a backup.") from None

    @staticmethod
    def _create_sqlite_schema(db) -> None:
        if db.exec_driver_sql("PRAGMA user_version").scalar() < SCHEMA_VERSION:  # not done by another process since
            schema.create_all(db, tables=SQLITE_TABLES)
            db.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _create_postgres_schema(self, db) -> None:
        # Several app processes starting at once: one creates the tables, the others wait here and find them.
        db.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
        version_row = meta_table.c.key == "schema_version"
        version = (int(db.scalar(select(meta_table.c.value).where(version_row)) or 0)
                   if inspect(db).has_table("meta") else 0)
        if version > SCHEMA_VERSION:
            raise FeedbackError(f"{self.name} was written by a newer ftchat (schema {version} > {SCHEMA_VERSION}); "
                                "update ftchat to read it, or give --feedback-db another database.")
        if version < SCHEMA_VERSION:
            schema.create_all(db)
            db.execute(meta_table.delete().where(version_row))
            db.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))

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
    def for_workspace(cls, workspace: str | os.PathLike, database: str | None = None) -> "FeedbackStore":
        """The ratings of a workspace: in `database` (a --feedback-db URL) if given, else WORKSPACE/feedback.sqlite."""
        return cls(database or Path(workspace) / FEEDBACK_FILE)

    def _run(self, work, write: bool = False):
        """work(connection) in one transaction, committed when it returns; its result. A PostgreSQL server that is
        down or restarting is waited for up to RECONNECT_S, then FeedbackError says so in one sentence."""
        deadline = time.monotonic() + RECONNECT_S
        while True:
            committing = False
            try:
                with self._engine.connect() as db:
                    if write:
                        db.execution_options(**{_WRITE: True})
                    with db.begin():
                        result = work(db)
                        committing = write
                return result
            except (OperationalError, InterfaceError) as exc:
                if not self.postgres:
                    raise
                if committing:  # the server may have stored it before the connection broke: trying again could
                    # store a vote twice
                    raise FeedbackError(f"the connection to the ratings database {self.name} broke while saving "
                                        f"({_reason(exc)}); the change may not be stored: look before trying "
                                        "again.") from None
                if time.monotonic() > deadline:
                    raise FeedbackError(f"the ratings database {self.name} cannot be reached ({_reason(exc)}); "
                                        "start it, or correct --feedback-db.") from None
                time.sleep(0.25)

    def _insert_ignoring(self, table: Table):
        """INSERT that skips a row whose key is there already; its rowcount says whether it inserted."""
        return ((postgresql.insert if self.postgres else sqlite.insert)(table).on_conflict_do_nothing()
                .execution_options(preserve_rowcount=True))

    def _insert(self, values: dict, task_item: int | None = None) -> int:
        def work(db):
            if task_item is not None:
                self._check_task_item(db, int(task_item), values["rater"])
            rating_id = int(db.execute(ratings_table.insert().values(values)).inserted_primary_key[0])
            if task_item is not None:
                db.execute(task_ratings_table.insert().values(item=int(task_item), rating_id=rating_id))
            return rating_id

        return self._run(work, write=True)

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
        r = ratings_table.c

        def work(db):
            # one statement decides, so two admins deleting at once write one audit row
            if db.execute(update(ratings_table).where(r.id == int(rating_id), r.deleted == 0)
                          .values(deleted=1)).rowcount:
                db.execute(audit_table.insert().values(time=time.time(), action="delete", rating_id=int(rating_id),
                                                       detail=json.dumps({"reason": reason}, ensure_ascii=False)))
            elif db.scalar(select(r.id).where(r.id == int(rating_id))) is None:
                raise FeedbackError(f"rating {rating_id}: no such rating.")

        self._run(work, write=True)

    def mark_used(self, round_name: str, rating_ids) -> None:
        """Record that the round `round_name` was built from these ratings (one transaction; repeats are kept once)."""
        now = time.time()
        rows = [{"round": round_name, "rating_id": int(i), "time": now} for i in rating_ids]
        if rows:
            self._run(lambda db: db.execute(self._insert_ignoring(round_ratings_table), rows), write=True)

    def unused_count(self) -> int:
        """How many live ratings no round has been built from yet."""
        r = ratings_table.c
        return int(self._run(lambda db: db.scalar(
            select(func.count()).where(r.deleted == 0, r.id.not_in(select(round_ratings_table.c.rating_id))))))

    def rounds_used(self) -> list[tuple[str, int]]:
        """(round, number of live ratings it was built from), oldest round first."""
        r, u = ratings_table.c, round_ratings_table.c
        query = (select(u.round, func.count(r.id)).join_from(round_ratings_table, ratings_table, r.id == u.rating_id)
                 .where(r.deleted == 0).group_by(u.round).order_by(func.min(u.time), u.round))
        return [(row[0], int(row[1])) for row in self._run(lambda db: db.execute(query).all())]

    def rounds_of(self, rating_ids) -> list[tuple[str, int]]:
        """(round, how many of these ratings it was built from), oldest round first."""
        ids = [int(i) for i in rating_ids]
        if not ids:
            return []
        u = round_ratings_table.c
        query = (select(u.round, func.count(u.rating_id)).where(u.rating_id.in_(ids)).group_by(u.round)
                 .order_by(func.min(u.time), u.round))
        return [(row[0], int(row[1])) for row in self._run(lambda db: db.execute(query).all())]

    # -- reading ------------------------------------------------------------------------------------------------
    def ratings(self, model: str | None = None, rater: str | None = None, kind: str | None = None,
                round: str | None = None, include_deleted: bool = False, source: str | None = None,
                anonymous: bool | None = None, task: int | None = None) -> list[dict]:
        """Ratings as dicts (conversation and settings parsed), oldest first. `model` matches either side;
        `round` is a round's run name (the ratings it was built from) or UNUSED (those no round used yet);
        `source` is where a rating came from ('ftchat' or 'import'); `task` a rating task's id (its votes)."""
        r, u = ratings_table.c, round_ratings_table.c
        query = select(ratings_table).order_by(r.id)
        if model:
            query = query.where(or_(r.model_a == model, r.model_b == model))
        if rater:
            query = query.where(r.rater == rater)
        if kind:
            if kind not in RATING_KINDS:
                raise FeedbackError(f"kind: '{kind}' is not one of {', '.join(RATING_KINDS)}.")
            query = query.where(r.kind == kind)
        if round == UNUSED:
            query = query.where(r.id.not_in(select(u.rating_id)))
        elif round:
            query = query.where(r.id.in_(select(u.rating_id).where(u.round == round)))
        if source:
            query = query.where(r.source == source)
        if anonymous is not None:
            query = query.where(r.anonymous == int(bool(anonymous)))
        if task is not None:
            query = query.where(r.id.in_(self._task_rating_ids(int(task))))
        if not include_deleted:
            query = query.where(r.deleted == 0)
        return [_row_dict(row) for row in self._run(lambda db: db.execute(query).mappings().all())]

    def get(self, rating_id: int) -> dict:
        query = select(ratings_table).where(ratings_table.c.id == int(rating_id))
        row = self._run(lambda db: db.execute(query).mappings().first())
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
        r = ratings_table.c
        query = union(select(r.model_a).where(r.deleted == 0),
                      select(r.model_b).where(r.deleted == 0, r.model_b.is_not(None)))
        return sorted(self._run(lambda db: db.execute(query).scalars().all()))

    def audit(self) -> list[dict]:
        rows = self._run(lambda db: db.execute(select(audit_table).order_by(audit_table.c.id)).mappings().all())
        return [{**r, "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    # -- import -------------------------------------------------------------------------------------------------
    def add_imported(self, rows: list[dict], file: str, format: str | None, skipped: int) -> tuple[int, int]:
        """Store rows that ftchat.feedback.imports parsed from one file, in one transaction with its audit row;
        (added, duplicates): a row whose import_key is there already is counted once."""
        def work(db):
            added = sum(db.execute(self._insert_ignoring(ratings_table), values).rowcount for values in rows)
            duplicates = len(rows) - added
            db.execute(audit_table.insert().values(
                time=time.time(), action="import", rating_id=None,
                detail=json.dumps({"file": file, "format": format, "added": added, "duplicates": duplicates,
                                   "skipped": skipped})))
            return added, duplicates

        return self._run(work, write=True)

    # -- rating tasks --------------------------------------------------------------------------------------------
    @staticmethod
    def _item_votes():
        """An item's live linked votes, for a query over task_items: the item is done once there is one."""
        i, l, r = task_items_table.c, task_ratings_table.c, ratings_table.c
        return (select(func.count()).select_from(task_ratings_table.join(ratings_table, r.id == l.rating_id))
                .where(l.item == i.id, r.deleted == 0).correlate(task_items_table).scalar_subquery())

    @staticmethod
    def _task_rating_ids(task_id: int):
        """The ids of a task's votes (ratings(task=...))."""
        i, l = task_items_table.c, task_ratings_table.c
        return select(l.rating_id).join_from(task_ratings_table, task_items_table, i.id == l.item).where(
            i.task == task_id)

    def add_task(self, name: str, models: list[str], overlap: float, seed: int, items: list[dict],
                 created_by: str | None = None) -> int:
        """Store a task and its items (dicts of prompt_index, conversation, rater, position, model_left,
        model_right, shared) in one transaction; returns the task's id. FeedbackError when the name is taken."""
        name = (name or "").strip()
        if not name:
            raise FeedbackError("task name: give the task a name.")
        rows = [{"prompt_index": int(item["prompt_index"]),
                 "conversation": json.dumps(check_conversation(item["conversation"],
                                                               f"prompt {item['prompt_index'] + 1}"),
                                            ensure_ascii=False),
                 "rater": item["rater"], "position": int(item["position"]), "model_left": item["model_left"],
                 "model_right": item["model_right"], "shared": int(bool(item["shared"]))} for item in items]

        def work(db):
            # one statement decides, so two admins creating a task of one name at once get one task
            if not db.execute(self._insert_ignoring(tasks_table).values(
                    name=name, time=time.time(), models=json.dumps(list(models), ensure_ascii=False),
                    overlap=float(overlap), seed=int(seed), created_by=created_by)).rowcount:
                raise FeedbackError(f"task {name!r} exists already; give the new task another name.")
            task_id = int(db.scalar(select(tasks_table.c.id).where(tasks_table.c.name == name)))
            if rows:
                db.execute(task_items_table.insert(), [{**row, "task": task_id} for row in rows])
            return task_id

        return self._run(work, write=True)

    def tasks(self) -> list[dict]:
        """Every task (models parsed) with its number of items, oldest first."""
        t, i = tasks_table.c, task_items_table.c
        query = (select(tasks_table, func.count(i.id).label("items"))
                 .join_from(tasks_table, task_items_table, i.task == t.id, isouter=True)
                 .group_by(*tasks_table.c).order_by(t.id))
        rows = self._run(lambda db: db.execute(query).mappings().all())
        return [{**row, "models": json.loads(row["models"]), "items": int(row["items"])} for row in rows]

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
        i = task_items_table.c
        query = select(task_items_table, self._item_votes().label("votes")).where(i.task == int(task_id))
        if rater is not None:
            query = query.where(i.rater == rater)
        rows = self._run(lambda db: db.execute(query.order_by(i.rater, i.position)).mappings().all())
        return [_item_dict(row) for row in rows]

    def next_task_item(self, rater: str) -> dict | None:
        """The rater's next item without a live vote: the oldest task's first by position; None when all are done."""
        i = task_items_table.c
        votes = self._item_votes()
        query = (select(task_items_table, votes.label("votes")).where(i.rater == rater, votes == 0)
                 .order_by(i.task, i.position).limit(1))
        row = self._run(lambda db: db.execute(query).mappings().first())
        return _item_dict(row) if row is not None else None

    def task_votes(self, task_id: int) -> list[dict]:
        """The live votes cast on a task's items, oldest first: rating dicts with `task_item`, `prompt_index` and
        `shared` (whether two raters have the prompt)."""
        r, l, i = ratings_table.c, task_ratings_table.c, task_items_table.c
        query = (select(ratings_table, i.id.label("task_item"), i.prompt_index, i.shared)
                 .join_from(ratings_table, task_ratings_table, l.rating_id == r.id)
                 .join(task_items_table, i.id == l.item)
                 .where(i.task == int(task_id), r.deleted == 0).order_by(r.id))
        rows = self._run(lambda db: db.execute(query).mappings().all())
        return [{**_row_dict(row), "shared": bool(row["shared"])} for row in rows]

    @staticmethod
    def _check_task_item(db, item_id: int, rater: str | None) -> None:
        """Inside a vote's transaction: the item exists and is this rater's, or FeedbackError (nothing is stored)."""
        owner = db.scalar(select(task_items_table.c.rater).where(task_items_table.c.id == item_id))
        if owner is None:
            raise FeedbackError(f"task item {item_id}: no such item.")
        if owner != rater:
            raise FeedbackError(f"task item {item_id} is {owner}'s to rate, not {rater or 'an unnamed rater'}'s.")
    # -- end of rating tasks -------------------------------------------------------------------------------------

    # -- the team (PostgreSQL; a SQLite workspace keeps its users in users.json) --------------------------------
    def users(self) -> dict[str, dict]:
        """{name: {"role", "hash"}} of the users table."""
        self._check_team_here()
        rows = self._run(lambda db: db.execute(select(users_table)).all())
        return {row.name: {"role": row.role, "hash": row.hash} for row in rows}

    def set_user(self, name: str, role: str, password_hash: str) -> bool:
        """Add a user, or give an existing one this role and hash; True when the name was new."""
        self._check_team_here()

        def work(db):
            if db.execute(self._insert_ignoring(users_table).values(name=name, role=role, hash=password_hash)).rowcount:
                return True
            db.execute(update(users_table).where(users_table.c.name == name).values(role=role, hash=password_hash))
            return False

        return self._run(work, write=True)

    def remove_user(self, name: str) -> bool:
        """Remove a user; False when there was none of that name."""
        self._check_team_here()
        return bool(self._run(lambda db: db.execute(users_table.delete().where(users_table.c.name == name)).rowcount,
                              write=True))

    def _check_team_here(self) -> None:
        if not self.postgres:
            raise FeedbackError(f"{self.name}: a SQLite ratings file keeps no users; the workspace's team is in its "
                                "users.json.")


def _item_dict(row) -> dict:
    out = dict(row)
    out["conversation"] = json.loads(out["conversation"])
    out["shared"] = bool(out["shared"])
    out["done"] = bool(out.get("votes"))
    return out


def _row_dict(row) -> dict:
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
