"""How a chat and a training run of one workspace share the CPU cores.

A run training on the CPU holds its slot's threads (ftchat.run_queue: every core of a 2-core machine). While a chat
reply streams, the chat engine keeps a mark in RUNS/.streaming/ (`streaming`): one small file per streaming reply, its
modification time renewed every HEARTBEAT_S. A mark counts while it is fresh and its process lives, so one left by a
killed or stopped chat stops counting within STALE_S. The trainer (ftchat.train.common.CoreSharingCallback) looks for
marks before every step and gradient-accumulation micro-step: while any is there it trains on `kept_threads`, one
fewer thread per streaming row (at least one), and takes its threads back once the marks are gone. The engine decodes
each llama.cpp row on `chat_threads`: the cores the trainers leave, shared among every row streaming in the workspace
(other chat processes' marks included), looked at again every HEARTBEAT_S while it streams.

FTCHAT_CORE_SHARING picks what the processes do (bench/chat_while_training.py compares them):
  both     the trainer yields threads and priority while a reply streams
  threads  the trainer yields threads; no nice
  nice     the trainer keeps its threads and yields priority; the chat decodes as if the trainer were not there (the
           default: the best of the four in bench/chat_while_training.py, docs/benchmarks.md)
  none     neither: no marks, the trainer keeps its threads, a pane decodes on cores // its panes
Yielding priority: a trainer the app launched leads a session of its own, and where the kernel weighs sessions against
each other (autogroup, Linux's default) its session runs at nice TRAINER_NICE while marks are there and at 0 again
after, checked every PRIORITY_POLL_S by a thread of its own (`PriorityWhileStreaming`), so a reply's first token need
not wait for a step to end. A trainer started from a shell does not lead its session: it trains at nice TRAINER_NICE
throughout (`lower_priority`; an unprivileged process cannot raise its priority again).
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

from ftchat import runs
from ftchat.run_queue import live_state

POLICIES = ("both", "threads", "nice", "none")
DEFAULT_POLICY = "nice"
STREAMING_DIR = ".streaming"
HEARTBEAT_S = 1.0
STALE_S = 3.0  # a mark not renewed this long is stale: three missed heartbeats
# a nice value lowers the trainer's weight against a chat thread on the same core: 10 gives it ~10% of a contended
# core (the kernel's weights 110 against 1024), the whole core when nobody else wants it
TRAINER_NICE = 10
PRIORITY_POLL_S = 0.1

_serial = itertools.count()


def policy() -> str:
    """FTCHAT_CORE_SHARING, or the default when it is unset or not one of POLICIES."""
    value = os.environ.get("FTCHAT_CORE_SHARING", "").strip().lower()
    return value if value in POLICIES else DEFAULT_POLICY


def yields_threads() -> bool:
    return policy() in ("both", "threads")


def uses_nice() -> bool:
    return policy() in ("both", "nice")


# -- the chat's side: marks ------------------------------------------------------------------------------------------

def marks_dir(runs_root: str | Path) -> Path:
    return Path(runs_root) / STREAMING_DIR


def live_marks(runs_root: str | Path, now: float | None = None) -> list[dict]:
    """The marks of replies streaming now in this workspace: {"path", "pid", "rows", ...} each. Stale ones (not
    renewed for STALE_S, or their process gone) are removed on the way."""
    folder = marks_dir(runs_root)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    now = time.time() if now is None else now
    out = []
    for entry in entries:
        if not entry.name.endswith(".json"):
            continue
        try:
            fresh = now - entry.stat().st_mtime < STALE_S
            mark = json.loads(Path(entry.path).read_text())
        except (OSError, ValueError):
            continue  # gone meanwhile, or being written
        if fresh and runs.alive(mark.get("pid"), mark.get("pid_start")):
            out.append({**mark, "path": entry.path})
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass
    return out


def streaming_rows(runs_root: str | Path) -> int:
    return sum(int(mark.get("rows") or 1) for mark in live_marks(runs_root))


def training_threads(runs_root: str | Path) -> list[int]:
    """The threads each run of this workspace training on the CPU holds (its status' `threads`, written by its
    CoreSharingCallback as training begins), other than this process' own (a run that compares its answers after
    training chats in its own process)."""
    held = []
    root = Path(runs_root)
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return held
    for folder in folders:
        status = runs.read_status(folder)
        if status.get("state") != "running" or status.get("phase") != "training" or status.get("device") != "cpu" \
                or status.get("pid") == os.getpid():
            continue
        if live_state(folder, status) == "running":
            held.append(int(status.get("threads") or os.cpu_count() or 1))
    return held


def kept_threads(own: int, rows: int) -> int:
    """The threads a trainer of `own` threads keeps while `rows` replies stream: a core for each, at least one."""
    return max(1, own - rows) if rows else own


def chat_threads(runs_root: str | Path | None, rows: int, mine: int = 0, cores: int | None = None) -> int:
    """llama.cpp threads for each of `rows` rows about to stream. `mine`: rows of this process' own marks already
    counted among the workspace's (so they are not counted twice)."""
    cores = cores or os.cpu_count() or 1
    rows = max(1, rows)
    if policy() == "none" or runs_root is None:
        return max(1, cores // rows)
    everyone = rows + max(0, streaming_rows(runs_root) - mine)
    held = 0
    if policy() != "nice":  # a niced trainer gives way; otherwise its kept threads are its cores
        held = sum(kept_threads(own, everyone) for own in training_threads(runs_root))
    return max(1, max(1, cores - held) // everyone)


class Streaming:
    """One reply's mark, renewed by a thread of its own until `close`; `threads` is the llama.cpp threads each of
    its rows should decode on now (chat_threads, looked at again at each renewal)."""

    def __init__(self, runs_root: str | Path | None, rows: int):
        self.runs_root, self.rows = runs_root, max(1, rows)
        self.path: Path | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a renewal that marks again never follows `close`
        self._thread: threading.Thread | None = None
        marking = runs_root is not None and policy() != "none" and Path(runs_root).is_dir()
        if marking:
            self.path = self._write()
        self.threads = chat_threads(runs_root, self.rows, mine=self.rows if self.path else 0)
        if marking:
            self._thread = threading.Thread(target=self._beat, name="chat-streaming-mark", daemon=True)
            self._thread.start()

    def _write(self) -> Path | None:
        folder = marks_dir(self.runs_root)
        pid = os.getpid()
        path = folder / f"{pid}-{next(_serial)}.json"
        try:
            folder.mkdir(exist_ok=True)
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps({"pid": pid, "pid_start": runs.process_start(pid), "rows": self.rows,
                                           "since": time.time()}))
            partial.replace(path)
        except OSError:  # a read-only workspace: the chat decodes unmarked
            return None
        return path

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    os.utime(self.path)
                except FileNotFoundError:  # removed as stale (this process was stopped a while): mark again
                    self.path = self._write() or self.path
                except OSError:
                    pass
            self.threads = chat_threads(self.runs_root, self.rows, mine=self.rows)

    def close(self) -> None:
        """Remove the mark (again: harmless)."""
        with self._lock:
            self._stop.set()
            if self.path is not None:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass

    def __enter__(self) -> "Streaming":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def streaming(runs_root: str | Path | None, rows: int) -> Streaming:
    """Mark `rows` replies as streaming in the workspace whose runs folder is `runs_root` (None, or a folder that does
    not exist: no mark) until the returned mark is closed; use it as a context manager."""
    return Streaming(runs_root, rows)


# -- the trainer's side ------------------------------------------------------------------------------------------------

def lower_priority(nice: int = TRAINER_NICE) -> None:
    """Run this process at `nice` from now on. On Linux a nice value belongs to each thread: every thread already
    started gets it, and later ones inherit it."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass


AUTOGROUP = Path("/proc/self/autogroup")


def session_priority_adjustable() -> bool:
    """Whether this process can lower its priority against other sessions and raise it again: it leads its session
    and the kernel weighs sessions (autogroup)."""
    try:
        return (os.getsid(0) == os.getpid() and os.access(AUTOGROUP, os.W_OK)
                and Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1")
    except OSError:
        return False


def session_nice() -> int | None:
    """This process' session's nice value (autogroup), None where there is none."""
    try:
        return int(AUTOGROUP.read_text().split("nice")[-1])
    except (OSError, ValueError):
        return None


class PriorityWhileStreaming:
    """A thread that sets this session's nice to `nice` while the workspace's chat streams and back to 0 after."""

    def __init__(self, runs_root: str | Path, nice: int = TRAINER_NICE):
        self.runs_root, self.nice = runs_root, nice
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="priority-while-streaming", daemon=True)
        self._thread.start()

    def _set(self, nice: int) -> None:
        try:
            AUTOGROUP.write_text(str(nice))
        except OSError:
            pass

    def _watch(self) -> None:
        current = 0
        while not self._stop.is_set():
            wanted = self.nice if streaming_rows(self.runs_root) else 0
            if wanted != current:
                self._set(wanted)
                current = wanted
            self._stop.wait(PRIORITY_POLL_S)
        self._set(0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def yield_priority(runs_root: str | Path) -> PriorityWhileStreaming | None:
    """Yield priority to the workspace's chat from now on: only while it streams where this process can take its
    priority back (PriorityWhileStreaming, returned), else for good (lower_priority, None returned)."""
    if session_priority_adjustable():
        return PriorityWhileStreaming(runs_root)
    lower_priority()
    return None
