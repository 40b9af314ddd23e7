"""The people of a rating team: each name has a role (admin or rater) and a password hash, in WORKSPACE/users.json or,
for a team whose ratings are in PostgreSQL (`--feedback-db postgresql://...`), in that database's users table.

An admin trains, exports, deletes ratings, starts rounds and manages users; a rater chats and rates. Neither place
holds a password, only its Argon2id hash; the file is written atomically with mode 0600.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path

# Argon2id (argon2-cffi's PasswordHasher): the password-hashing winner that OWASP lists first; each hash carries its
# own random salt and cost parameters, and verify() compares in constant time, so nothing here is home-made.
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ftchat.feedback.store import ROLES, FeedbackError, FeedbackStore, locate

USERS_FILE = "users.json"
MIN_PASSWORD = 8
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
log = logging.getLogger("ftchat.users")

_hasher = PasswordHasher()
# Checked when a name is unknown, so that a wrong name costs as long as a wrong password and the timing does not say
# which names exist.
_UNKNOWN = _hasher.hash("no such user: this hash matches no password anyone types")


class UsersError(ValueError):
    """A users file or a user that cannot be used; the message says what to fix."""


def users_path(workspace) -> Path:
    return Path(workspace) / USERS_FILE


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise UsersError(f"{name!r} cannot be a user name: use 1-64 letters, digits, '.', '_', '@' or '-', starting "
                         "with a letter or digit.")
    return name


def open_users(workspace, database: str | None = None, file=None):
    """The team of a workspace: the users table of a PostgreSQL `database` (a --feedback-db URL), else `file` or
    WORKSPACE/users.json."""
    if database and not isinstance(locate(database), Path):
        if file:
            raise UsersError(f"--file {file}: the team of a PostgreSQL ratings database is in its users table; "
                             "leave out the file.")
        return DatabaseUsers(FeedbackStore(database))
    return Users(file or users_path(workspace))


def _password_hash(name: str, role: str, password: str) -> str:
    """The hash to keep for a new or changed user, once name, role and password are acceptable."""
    check_name(name)
    if role not in ROLES:
        raise UsersError(f"role {role!r}: use one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD:
        raise UsersError(f"the password for {name} is too short: use at least {MIN_PASSWORD} characters.")
    return _hasher.hash(password)


def _matches(entry: dict | None, password: str) -> bool:
    """Whether `password` is the one of this user entry; as slow for None (no such user) as for a user."""
    try:
        return _hasher.verify(entry["hash"] if entry else _UNKNOWN, str(password)) and entry is not None
    except (VerificationError, VerifyMismatchError, InvalidHashError):
        return False


class _Team:
    """A team's accounts, as both stores answer for them from their read()."""
    unreadable: tuple[type[Exception], ...] = ()  # what read() raises when the accounts cannot be had

    def role(self, name: str | None) -> str | None:
        """The role of a user, or None for a name the team does not hold."""
        entry = self.read().get(name or "")
        return entry["role"] if entry else None

    def check(self, name: str, password: str) -> bool:
        """Whether `password` is this user's; as slow for an unknown name as for a known one."""
        try:
            entry = self.read().get(str(name))
        except self.unreadable as exc:  # a damaged file, a database that is down: nobody logs in, the log says why
            log.warning("login of %s refused: %s", name, exc)
            return False
        return _matches(entry, password)


class Users(_Team):
    """The users file, read again whenever it changed on disk (a user added while the app runs can log in)."""
    unreadable = (UsersError,)

    def __init__(self, path):
        self.path = Path(path)
        self.where = str(self.path)  # where the team is kept, as messages name it
        self.option = f"--file {self.path}"  # how `python -m ftchat users` is pointed at it
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read
        self._users: dict[str, dict] = {}

    def read(self) -> dict[str, dict]:
        """{name: {"role", "hash"}}; an absent file is no users."""
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._seen, self._users = None, {}
                return {}
            key = (stat.st_mtime_ns, stat.st_size)
            if key != self._seen:
                self._users = parse(self.path)
                self._seen = key
            return dict(self._users)

    def add(self, name: str, role: str, password: str) -> bool:
        """Add a user, or give an existing one a new role and password; True when the name was new."""
        hashed = _password_hash(name, role, password)
        with self._changing() as users:
            new = name not in users
            users[name] = {"role": role, "hash": hashed}
        return new

    def remove(self, name: str) -> None:
        with self._changing() as users:
            if name not in users:
                raise UsersError(f"{self.path}: no user {name!r} (users: {', '.join(sorted(users)) or 'none'}).")
            del users[name]

    @contextlib.contextmanager
    def _changing(self):
        """The users to change, written back on leaving; one change at a time across processes (two admins adding
        people at once both keep theirs)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self._lock:
                self._seen = None  # read what is on disk now, not what this process saw before
            users = self.read()
            yield users
            self._write(users)

    def _write(self, users: dict[str, dict]) -> None:
        """Write the whole file at once (a reader sees the old file or the new one) and only for its owner."""
        fd, tmp = tempfile.mkstemp(prefix=".users-", suffix=".tmp", dir=self.path.parent)  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(users, out, indent=2, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.chmod(self.path, 0o600)
        with self._lock:
            self._seen = None


def parse(path: Path) -> dict[str, dict]:
    """The users of a file, every problem in it named at once."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsersError(f"{path}: not a users file ({exc}); create one with `python -m ftchat users add NAME "
                         "--role admin`.") from None
    if not isinstance(data, dict):
        raise UsersError(f"{path}: expected an object {{name: {{role, hash}}}}, found {type(data).__name__}.")
    problems = []
    for name, entry in data.items():
        if not isinstance(entry, dict) or entry.get("role") not in ROLES or not isinstance(entry.get("hash"), str):
            problems.append(f"{name!r}: needs a role ({' or '.join(ROLES)}) and a hash")
    if problems:
        raise UsersError(f"{path}: " + "; ".join(problems) + ". Set them again with `python -m ftchat users add`.")
    return {name: {"role": entry["role"], "hash": entry["hash"]} for name, entry in data.items()}


class DatabaseUsers(_Team):
    """The users table of a PostgreSQL ratings database: every app process serving that database, on any machine,
    logs in the same team, and a user added or removed counts at once everywhere."""
    unreadable = (FeedbackError,)

    def __init__(self, store: FeedbackStore):
        self.store = store
        self.where = f"the users table of {store.name}"
        self.option = f"--feedback-db {store.name}"

    def read(self) -> dict[str, dict]:
        """{name: {"role", "hash"}}."""
        return self.store.users()

    def add(self, name: str, role: str, password: str) -> bool:
        """Add a user, or give an existing one a new role and password; True when the name was new."""
        return self.store.set_user(name, role, _password_hash(name, role, password))

    def remove(self, name: str) -> None:
        if not self.store.remove_user(name):
            raise UsersError(f"{self.where}: no user {name!r} (users: {', '.join(sorted(self.read())) or 'none'}).")
