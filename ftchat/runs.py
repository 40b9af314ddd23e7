"""Run folders: what a run writes, how to read it back, and how to launch one as a subprocess.

runs/NAME/
  config.yaml     resolved RunConfig (data hashes, base, every default)
  status.json     {"state": queued|running|done|failed|cancelled, "pid", "error", "summary", "enqueued", "started",
                  "ended", ...}
  queue.json      its place in the workspace's training queue: {"enqueued", "order", "after"} (ftchat.run_queue)
  metrics.jsonl   one line per logging step: step, loss, eval_loss, learning_rate, tokens_per_s, elapsed_s, eta_s,
                  time (wall clock), threads (torch threads the step ended on: fewer while a chat streams, ftchat.cores)
  train.log       the trainer's stdout/stderr when launched from the UI
  adapter/        a plain PEFT folder (qlora, lora, prompt) - or model/ (full, layers)
  parent          path of the run this one continues, if any
runs/.streaming/  one mark per chat reply streaming now (ftchat.cores)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ftchat import models
from ftchat.config import RunConfig, file_sha256
from ftchat.names import base_choice, base_of_choice, is_base

STATES = ("queued", "running", "done", "failed", "cancelled")
ENDED = ("done", "failed", "cancelled")
QUEUE_FILE = "queue.json"
LAUNCHED_ENV = "FTCHAT_ENQUEUED"  # set for a trainer that `launch` queued: it waits in that place, never a new one


@contextmanager
def _folder_lock(run_dir: str | Path):
    """Exclusive between every writer of this run folder's status, in any process (flock on the folder itself)."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def write_status(run_dir: str | Path, state: str, only_if=None, **extra) -> dict | None:
    """Merge `extra` and `state` into status.json; with `only_if(current status)` false, change nothing and return
    None. Writers take turns, so a check and the write that follows it see no other write between them."""
    assert state in STATES, state
    path = Path(run_dir) / "status.json"
    with _folder_lock(run_dir):
        current = read_status(run_dir)
        if only_if is not None and not only_if(current):
            return None
        if state in ENDED and current.get("state") not in ENDED:
            current["ended"] = time.time()
        current.update(extra, state=state, updated=time.time())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=1))
        tmp.replace(path)  # readers never see half a file
    return current


def read_queue_entry(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / QUEUE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_queue_entry(run_dir: str | Path, **values) -> dict:
    """Merge `values` into the run's queue.json."""
    path = Path(run_dir) / QUEUE_FILE
    with _folder_lock(run_dir):
        entry = {**read_queue_entry(run_dir), **values}
        tmp = path.with_suffix(".qtmp")
        tmp.write_text(json.dumps(entry, indent=1))
        tmp.replace(path)
    return entry


def enqueue(run_dir: str | Path, after: str | Path | None = None, pid: int | None = None) -> dict:
    """Put a run at the end of its workspace's queue: queue.json and status `queued`. Its trainer process waits
    for its turn (ftchat.run_queue.turn); `after` is a run that must be done before this one may start."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    write_queue_entry(run_dir, enqueued=now, order=now, after=str(after) if after else None, est_seconds=None)
    return write_status(run_dir, "queued", enqueued=now, started=None, ended=None, error=None, cancel_requested=None,
                        phase=None, step=0, pid=pid, pid_start=process_start(pid))


def read_status(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def read_metrics(run_dir: str | Path) -> list[dict]:
    rows = []
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # the last line may be mid-write
            continue
    return rows


def adapter_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "adapter"


def model_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "model"


def weights_dir(run_dir: str | Path) -> Path:
    """The folder chat and export load: the PEFT adapter, or the whole model for full/layers runs."""
    return adapter_dir(run_dir) if adapter_dir(run_dir).exists() else model_dir(run_dir)


def process_start(pid: int | None) -> str | None:
    """When a process started, in clock ticks since boot (/proc/PID/stat field 22); None if unknown. A pid is
    reused once its process is gone; the pid with its start time names one process."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]  # fields after "(comm)" start at field 3
    except (OSError, IndexError):
        return None


def _command_line(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None


def alive(pid: int | None, started: str | None = None) -> bool:
    """Whether process `pid` runs (not a zombie) and, when `started` is given, is the one that started then."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is finished
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().split(")")[-1].split()[0] == "Z":
                return False
    except OSError:
        return True  # no /proc: the pid is all there is to go on
    return started is None or process_start(pid) == str(started)


def trainer_alive(status: dict) -> bool:
    """Whether the trainer a status.json names still runs: its pid and start time match; a status written before
    start times were recorded counts only a process whose command line is `... ftchat train ...`."""
    pid = status.get("pid")
    if status.get("pid_start"):
        return alive(pid, status["pid_start"])
    if not alive(pid):
        return False
    command = _command_line(pid)
    return command is None or ("ftchat" in command and " train" in command)


def _last_log_line(run_dir: str | Path) -> str:
    lines = [line.strip() for line in log_tail(run_dir, 40).splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def ended_reason(returncode: int | None, run_dir: str | Path) -> str:
    """A sentence for a trainer that ended without recording why: how it ended and the last line it logged."""
    if returncode is None:
        how = "it is no longer running (how it ended was not seen: the app was restarted or it ran elsewhere)"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        how = f"it was killed by signal {-returncode} ({name})"
        if -returncode == signal.SIGKILL:
            how += ", e.g. by the out-of-memory killer or kill -9"
    else:
        how = f"it exited with code {returncode}"
    last = _last_log_line(run_dir)
    return f"the training process ended unexpectedly: {how}." + (f" Last log line: {last}" if last else "")


@dataclass
class RunInfo:
    path: Path
    state: str
    config: dict
    status: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def parent(self) -> str | None:
        return self.config.get("parent")

    @property
    def error(self) -> str | None:
        return self.status.get("error")

    @property
    def summary(self) -> dict:
        return self.status.get("summary") or {}


def load_run(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    state = status.get("state", "queued")
    if state in ("queued", "running") and status.get("pid") and not trainer_alive(status):
        returncode = _exit_code(run_dir, status.get("pid"))
        fresh = read_status(run_dir)  # it (or the launcher's watcher) may have recorded the end since the first read
        if fresh.get("state") in STATES and fresh["state"] not in ("queued", "running"):
            status, state = fresh, fresh["state"]
        elif status.get("cancel_requested"):  # stopped by Cancel before it could say so itself
            state = "cancelled"
        else:  # the process died without saying so (killed, machine restart)
            state = "failed"
            status["error"] = status.get("error") or ended_reason(returncode, run_dir)
    try:
        config = RunConfig.load(run_dir / "config.yaml").to_dict()
    except Exception:
        config = {}
    return RunInfo(run_dir, state, config, status)


def list_runs(root: str | Path) -> list[RunInfo]:
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [load_run(p) for p in root.iterdir() if (p / "config.yaml").exists() or (p / "status.json").exists()]
    return sorted(runs, key=lambda r: r.status.get("started") or r.status.get("enqueued") or 0, reverse=True)


_launched: dict[str, subprocess.Popen] = {}  # run folder -> the trainer this process started for it


def launch(config: RunConfig, resume: bool = False, after: str | Path | None = None) -> subprocess.Popen:
    """Start `python -m ftchat train` on a config in its own process; it joins the workspace's queue (queued now,
    after every run already waiting), trains when its turn comes and writes into config.out. With `after`, it
    starts only once that run is done (and ends cancelled, saying why, if that run fails)."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "requested.yaml")
    enqueue(run_dir, after=after)
    command = [sys.executable, "-m", "ftchat", "train", str(run_dir / "requested.yaml")]
    if resume:
        command.append("--resume")
    log = open(run_dir / "train.log", "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="2", **{LAUNCHED_ENV: "1"})
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    write_status(run_dir, "queued", pid=process.pid, pid_start=process_start(process.pid),
                 only_if=lambda status: status.get("state") == "queued")
    _launched[str(run_dir.resolve())] = process
    threading.Thread(target=_record_end, args=(process, run_dir), name=f"watch-{run_dir.name}", daemon=True).start()
    return process


def launch_chain(configs: list[RunConfig]) -> subprocess.Popen:
    """Launch `configs` as a chain of queued runs, each after the one before it: a later one starts only when the
    one before it finished `done`, else it ends cancelled, saying why. Used by a reward-RL round: the reward model
    first, then the policy trained against it. The chain is on disk, so it goes on if the app stops meanwhile."""
    first = launch(configs[0])
    for before, later in zip(configs, configs[1:]):
        launch(later, after=before.out)
    return first


def _exit_code(run_dir: str | Path, pid: int | None) -> int | None:
    """The exit code of a trainer this process launched and that has ended; None if it was launched elsewhere."""
    process = _launched.get(str(Path(run_dir).resolve()))
    if process is None or process.pid != pid:
        return None
    try:  # it has ended: this returns as soon as the watcher (or anyone) has reaped it
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _record_end(process: subprocess.Popen, run_dir: Path) -> None:
    """Wait for a launched trainer; if it ended without recording an outcome (killed, crashed), record why."""
    returncode = process.wait()
    status = read_status(run_dir)
    if status.get("state") not in ("queued", "running") or status.get("pid") != process.pid:
        return  # it said how it ended, or a newer process took the run over (resume)
    if status.get("cancel_requested"):
        write_status(run_dir, "cancelled", error=None)
    else:
        write_status(run_dir, "failed", error=ended_reason(returncode, run_dir), returncode=returncode)


def cancel(run_dir: str | Path) -> bool:
    """Ask a run to stop: a queued run never starts; a running one saves a checkpoint and marks itself cancelled."""
    status = read_status(run_dir)
    if status.get("state") == "queued":
        if not status.get("pid") or not trainer_alive(status):  # nobody waits for it: it ends here
            return write_status(run_dir, "cancelled", error=None, phase="not started: cancelled",
                                only_if=lambda s: s.get("state") == "queued") is not None or cancel(run_dir)
        # its waiter sees this within a second and ends it; no signal: a waiter may be a process that trains
        # another run meanwhile (`ftchat round --method reward-rl`)
        if write_status(run_dir, "queued", cancel_requested=time.time(),
                        only_if=lambda s: s.get("state") == "queued") is not None:
            return True
        status = read_status(run_dir)  # it took its slot a moment ago: stop it as a running run
    pid = status.get("pid")
    if status.get("state") != "running" or not trainer_alive(status):
        return False  # never signal a pid whose trainer is gone: the system may have given it to another process
    write_status(run_dir, "running", cancel_requested=time.time())
    os.kill(pid, signal.SIGTERM)
    return True


@contextmanager
def sigterm_cancels():
    """While a run trains, SIGTERM sets the yielded event (the trainer then checkpoints and stops) instead of
    killing the process; the previous handler is back afterwards. Off the main thread signals cannot be caught,
    so the event is only ever set by the caller there."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, previous)


def log_tail(run_dir: str | Path, lines: int = 20) -> str:
    try:
        with open(Path(run_dir) / "train.log", "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 20000))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # tqdm redraws with carriage returns: keep only the last state of each line
    cleaned = [line.split("\r")[-1] for line in text.split("\n")]
    return "\n".join(cleaned[-lines:])


def parent_dir(run_dir: str | Path, runs_root: str | Path | None = None) -> Path | None:
    """The folder of the run that `run_dir` continued from (its config's `parent`), or None for a run trained
    from its base. A parent recorded as a path that no longer exists is looked up by name under runs_root."""
    run_dir = Path(run_dir)
    parent = load_run(run_dir).parent
    if not parent:
        return None
    path = Path(parent)
    if path.exists():
        return path
    root = Path(runs_root) if runs_root is not None else run_dir.parent
    return root / path.name


def lineage(runs_root: str | Path, run: str | Path) -> list[str]:
    """The chain from the base to `run`: ["base:NAME", first run, ..., run] (run folder names). The one place
    that follows `parent` links; a loop in them is cut where it closes."""
    runs_root = Path(runs_root)
    run_dir = Path(run) if Path(run).is_dir() else runs_root / str(run)
    chain, seen = [], set()
    current: Path | None = run_dir
    base = None
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        chain.append(current.name)
        base = load_run(current).config.get("base") or base
        current = parent_dir(current, runs_root)
    chain.reverse()
    return ([base_choice(base)] if base else []) + chain


_HASHES: dict[tuple, str] = {}


def weights_hash(choice: str, workspace: str | os.PathLike | None = None) -> str | None:
    """sha256 over the weights files of a chat choice (base:NAME, a run folder path, or a run name under
    WORKSPACE/runs); None when there are no weights to hash. Cached per file size and mtime. Callers pass only
    choices the workspace offers (ftchat.chat.ChatEngine.resolve_choice): this reads what it is given."""
    if is_base(choice):
        try:
            folder = models.resolve_base(base_of_choice(choice))
        except models.ModelError:
            return None
    else:
        run_dir = Path(choice)
        if not run_dir.exists() and workspace is not None:
            run_dir = Path(workspace) / "runs" / choice
        folder = weights_dir(run_dir)
    files = sorted(p for p in Path(folder).glob("*.safetensors") if p.is_file())
    if not files:
        return None
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _HASHES:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
