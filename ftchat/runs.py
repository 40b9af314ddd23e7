"""Run folders: what a run writes, how to read it back, and how to launch one as a subprocess.

runs/NAME/
  config.yaml     resolved RunConfig (data hashes, base, every default)
  status.json     {"state": running|done|failed|cancelled, "pid", "error", "summary", ...}
  metrics.jsonl   one line per logging step: step, loss, eval_loss, learning_rate, tokens_per_s, elapsed_s, eta_s
  train.log       the trainer's stdout/stderr when launched from the UI
  adapter/        a plain PEFT folder (qlora, lora, prompt) - or model/ (full, layers)
  parent          path of the run this one continues, if any
"""
from __future__ import annotations

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

from ftchat.config import RunConfig

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done",)


def write_status(run_dir: str | Path, state: str, **extra) -> dict:
    assert state in STATES, state
    path = Path(run_dir) / "status.json"
    current = read_status(run_dir)
    current.update(extra, state=state, updated=time.time())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=1))
    tmp.replace(path)  # readers never see half a file
    return current


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


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is finished
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


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
    if state in ("queued", "running") and status.get("pid") and not alive(status.get("pid")):
        if status.get("cancel_requested"):  # stopped by Cancel before it could say so itself
            state = "cancelled"
        else:  # the process died without saying so (killed, machine restart)
            state = "failed"
            status.setdefault("error", "the training process ended unexpectedly; see train.log")
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
    return sorted(runs, key=lambda r: r.status.get("started", 0), reverse=True)


def launch(config: RunConfig, resume: bool = False) -> subprocess.Popen:
    """Start `python -m ftchat train` on a config in its own process; it writes into config.out."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "requested.yaml")
    write_status(run_dir, "queued", started=time.time(), error=None, cancel_requested=None)
    command = [sys.executable, "-m", "ftchat", "train", str(run_dir / "requested.yaml")]
    if resume:
        command.append("--resume")
    log = open(run_dir / "train.log", "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="2")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    write_status(run_dir, "queued", pid=process.pid)
    return process


def cancel(run_dir: str | Path) -> bool:
    """Ask a running training to stop: it saves a checkpoint and marks itself cancelled."""
    status = read_status(run_dir)
    pid = status.get("pid")
    if not alive(pid):
        return False
    write_status(run_dir, status["state"], cancel_requested=time.time())
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
    return ([f"base:{base}"] if base else []) + chain
