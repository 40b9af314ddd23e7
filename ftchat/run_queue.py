"""The training queue of a workspace: runs take turns, one at a time on a CPU and one per GPU unless
`--parallel-runs N` allows more.

The queue is the run folders and RUNS/.queue/, never a process's memory, and needs no daemon: each queued run's own
trainer (`python -m ftchat train`) waits until it is first in line among the queued runs that may start (by order
key, then by when they joined) and a slot is free, then holds that slot's lock (flock on RUNS/.queue/slot-N.lock)
while it trains. A process that dies drops its lock with it, so a killed run never blocks the queue; the app can
restart while runs wait. A run with `after` waits until that run is done, and ends cancelled, saying why, if it is not.

RUN/queue.json              {"enqueued": time, "order": sort key (smaller goes first), "after": run folder or null,
                             "est_seconds": how long it should train, once its waiter has planned it}
RUNS/.queue/settings.json   {"parallel_runs": N}, when someone chose N
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ftchat import runs
from ftchat.config import ConfigError, RunConfig

QUEUE_DIR = ".queue"
POLL_S = 0.5
FRESH_S = 30  # a queued run whose waiter has not written its pid yet still counts this long


# -- slots: how many runs train at once, and with how many threads ------------------------------------------------

def gpu_ids() -> list[str]:
    """The GPUs this process may use, without importing torch: CUDA_VISIBLE_DEVICES, else the driver's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and not g.strip().startswith("-")]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def default_parallel() -> int:
    return max(1, len(gpu_ids()))


def settings_path(runs_root: str | Path) -> Path:
    return Path(runs_root) / QUEUE_DIR / "settings.json"


def parallel_runs(runs_root: str | Path) -> int:
    """How many runs of this workspace train at once: the number last chosen, else one per GPU (one on a CPU)."""
    try:
        return max(1, int(json.loads(settings_path(runs_root).read_text())["parallel_runs"]))
    except (OSError, ValueError, KeyError, TypeError):
        return default_parallel()


def set_parallel_runs(runs_root: str | Path, n: int) -> None:
    """Keep N for every process of this workspace (the app, `ftchat train`, `ftchat round`)."""
    if n < 1:
        raise ConfigError(f"--parallel-runs: at least 1 run at a time, not {n}.")
    path = settings_path(runs_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"parallel_runs": int(n)}))


def threads_per_run(parallel: int, cores: int | None = None, limit: str | None = None) -> int:
    """The cores a slot gives its trainer: the machine's cores shared among the runs that may train at once, and no
    more than OMP_NUM_THREADS (`limit`) when it is set."""
    cores = cores or os.cpu_count() or 1
    threads = max(1, cores // max(1, parallel))
    if limit and limit.strip().isdigit() and int(limit) > 0:
        threads = min(threads, int(limit))
    return threads


@dataclass
class Slot:
    index: int
    parallel: int
    threads: int
    gpu: str | None
    handle: object  # the open lock file; closing it frees the slot

    def release(self) -> None:
        self.handle.close()


def _try_slots(runs_root: Path, parallel: int):
    folder = runs_root / QUEUE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(parallel):
        handle = open(folder / f"slot-{index}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return index, handle
    return None


def _use_slot(index: int, parallel: int, handle) -> Slot:
    """Give this process the slot's share of the cores and, with several GPUs, the slot's GPU."""
    threads = threads_per_run(parallel, limit=os.environ.get("OMP_NUM_THREADS"))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")  # imported already (planning may load it): tell it too
    if torch is not None:
        torch.set_num_threads(threads)
    gpus, gpu = gpu_ids(), None
    if len(gpus) > 1 and (torch is None or not torch.cuda.is_initialized()):
        gpu = gpus[index % len(gpus)]
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return Slot(index, parallel, threads, gpu, handle)


# -- who waits, in what order -------------------------------------------------------------------------------------

def live_state(run_dir: Path, status: dict | None = None) -> str:
    """A run's state from its status alone (cheaper than runs.load_run): a queued or running run whose process is
    gone reads as failed (cancelled when a cancel was asked)."""
    status = runs.read_status(run_dir) if status is None else status
    state = status.get("state", "")
    if state not in ("queued", "running"):
        return state
    if status.get("pid"):
        if runs.trainer_alive(status):
            return state
        fresh = runs.read_status(run_dir)  # it may have recorded its end since
        if fresh.get("state") not in ("queued", "running"):
            return fresh.get("state", "")
        return "cancelled" if status.get("cancel_requested") else "failed"
    joined = status.get("enqueued") or status.get("updated") or 0
    return state if state == "running" or time.time() - joined < FRESH_S else "failed"


def after_dir(run_dir: Path, after: str | None) -> Path | None:
    if not after:
        return None
    path = Path(after)
    return path if path.is_absolute() else run_dir.parent / path


@dataclass
class Waiting:
    path: Path
    status: dict
    entry: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def key(self) -> tuple:
        enqueued = self.entry.get("enqueued") or self.status.get("enqueued") or 0
        order = self.entry.get("order")
        return (enqueued if order is None else order, enqueued, self.name)

    @property
    def after(self) -> Path | None:
        return after_dir(self.path, self.entry.get("after"))


def scan(runs_root: str | Path) -> tuple[list[Waiting], list[Waiting]]:
    """(running runs, queued runs in the order they will start) of a workspace, counting only live ones."""
    root = Path(runs_root)
    running, queued = [], []
    if not root.is_dir():
        return running, queued
    for path in root.iterdir():
        if path.name.startswith(".") or not path.is_dir():
            continue
        status = runs.read_status(path)
        state = live_state(path, status) if status.get("state") in ("queued", "running") else None
        if state == "running":
            running.append(Waiting(path, status, runs.read_queue_entry(path)))
        elif state == "queued":
            queued.append(Waiting(path, status, runs.read_queue_entry(path)))
    queued.sort(key=lambda w: w.key)
    return running, queued


def _ready(waiting: Waiting) -> bool:
    """Whether a queued run may start now as far as its `after` goes."""
    return waiting.after is None or live_state(waiting.after) in runs.ENDED


def _first_ready(runs_root: Path, run_dir: Path) -> bool:
    _, queued = scan(runs_root)
    ready = [w for w in queued if _ready(w)]
    return bool(ready) and ready[0].path.resolve() == run_dir.resolve()


def move_to_front(run_dir: str | Path) -> bool:
    """Put a queued run first in line (it still waits for a run it comes `after`); False if it is not queued."""
    run_dir = Path(run_dir)
    if live_state(run_dir) != "queued":
        return False
    _, queued = scan(run_dir.parent)
    first = min((w.key[0] for w in queued), default=time.time())
    runs.write_queue_entry(run_dir, order=first - 1)
    return True


# -- how long until a run starts -----------------------------------------------------------------------------------

def _last_metric(run_dir: Path) -> dict:
    try:
        with open(run_dir / "metrics.jsonl", "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def remaining_s(waiting: Waiting, now: float) -> float | None:
    """About how long a running run still trains: its last logged ETA, else its plan, else its queue estimate."""
    status, started = waiting.status, waiting.status.get("started") or now
    last = _last_metric(waiting.path)
    if last.get("eta_s") is not None and last.get("elapsed_s") is not None:
        return max(0.0, last["eta_s"] - max(0.0, (now - started) - last["elapsed_s"]))
    planned = (status.get("plan") or {}).get("est_seconds") or waiting.entry.get("est_seconds")
    return None if planned is None else max(0.0, planned - (now - started))


@dataclass
class Place:
    position: int  # 1: next in line
    after: str | None  # the run it starts after (None: it starts as soon as its waiter takes the free slot)
    wait_s: float | None  # about how long until it starts; None when a run ahead has no estimate yet
    est_s: float | None  # about how long it trains

    def describe(self) -> str:
        """What a person reads: "queued · 2nd, starts after round-2 (≈ 4 min)"."""
        when = f"starts after {self.after}" if self.after else "starts now"
        wait = f" ({about(self.wait_s)})" if self.after and self.wait_s is not None else ""
        return f"queued · {ordinal(self.position)}, {when}{wait}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def about(seconds: float) -> str:
    minutes = seconds / 60
    return f"≈ {minutes:.0f} min" if minutes >= 1.5 else f"≈ {max(10, round(seconds / 10) * 10):.0f} s"


def places(runs_root: str | Path, new_est_s: float | None = None) -> dict[str, Place]:
    """Each queued run's place, and when it should start: the running runs finish as their ETAs say, then each
    queued run in order takes the slot that frees first (or waits for the run it comes after). With `new_est_s`,
    also the place of a run that would join now, under the name ""."""
    running, queued = scan(runs_root)
    now = time.time()
    slots = [(remaining_s(w, now), w.name) for w in running]
    slots += [(0.0, None)] * max(0, parallel_runs(runs_root) - len(slots))
    finish = {name: remaining for remaining, name in slots}
    line = [(w.name, w.after, w.entry.get("est_seconds")) for w in queued]
    if new_est_s is not None:
        line.append(("", None, new_est_s))
    out = {}
    for position, (name, before, est) in enumerate(line, start=1):
        slots.sort(key=lambda s: (s[0] is None, s[0] or 0))  # unknown ends last
        start, after = slots.pop(0)
        if before is not None and live_state(before) not in runs.ENDED:
            ends = finish.get(before.name)
            if ends is None or start is None or ends >= start:
                start, after = ends, before.name
        done = None if start is None or est is None else start + est
        finish[name] = done
        slots.append((done, name))
        out[name] = Place(position, after, start, est)
    return out


# -- waiting for a turn ----------------------------------------------------------------------------------------------

def _join(run_dir: Path) -> bool:
    """Take this run's place in the queue: the one `runs.launch` made for this process, a stale one nobody waits
    in (a waiter that died), or a new one at the end. False: the launcher's run is no longer queued (cancelled)."""
    me = os.getpid()
    status = runs.read_status(run_dir)
    mine = dict(pid=me, pid_start=runs.process_start(me))
    if os.environ.pop(runs.LAUNCHED_ENV, None):
        return runs.write_status(run_dir, "queued", only_if=lambda s: s.get("state") == "queued", **mine) is not None
    entry = runs.read_queue_entry(run_dir)
    if status.get("state") == "queued" and entry and (status.get("pid") in (None, me) or not runs.trainer_alive(status)):
        runs.write_status(run_dir, "queued", **mine)
        return True
    if status.get("state") in ("queued", "running") and runs.trainer_alive(status):
        raise ConfigError(f"out: {run_dir} is already {status['state']} in process {status['pid']}.")
    runs.enqueue(run_dir, pid=me)
    runs.write_status(run_dir, "queued", pid_start=mine["pid_start"])
    return True


def _end_unstarted(run_dir: Path, why: str | None) -> None:
    runs.write_status(run_dir, "cancelled", error=why, phase="not started: " + (why or "cancelled"),
                      only_if=lambda s: s.get("state") == "queued")


def _wait(run_dir: Path, cancel, estimate, report, poll_s: float) -> Slot | None:
    root = run_dir.parent
    said, planned = None, False
    while True:
        status = runs.read_status(run_dir)
        if cancel.is_set() or status.get("cancel_requested"):
            _end_unstarted(run_dir, None)
            return None
        if status.get("state") != "queued":
            return None  # ended by someone else (e.g. cancelled with no waiter seen)
        entry = runs.read_queue_entry(run_dir)
        before = after_dir(run_dir, entry.get("after"))
        if before is not None:
            state = live_state(before)
            if state in ("failed", "cancelled"):
                error = runs.load_run(before).error
                _end_unstarted(run_dir, f"{before.name} ended {state}" + (f": {error}" if error else ""))
                return None
        if (before is None or live_state(before) == "done") and _first_ready(root, run_dir):
            parallel = parallel_runs(root)
            taken = _try_slots(root, parallel)
            if taken is not None:
                index, handle = taken
                claimed = runs.write_status(run_dir, "running", phase="starting", started=time.time(), slot=index,
                                            only_if=lambda s: s.get("state") == "queued"
                                            and not s.get("cancel_requested"))
                if claimed is None:  # cancelled this very moment
                    handle.close()
                    continue
                slot = _use_slot(index, parallel, handle)
                runs.write_status(run_dir, "running", threads=slot.threads, gpu=slot.gpu)
                report(f"starting: slot {index + 1} of {parallel}, {slot.threads} thread(s)")
                return slot
        if not planned and estimate is not None:  # it has to wait: plan it meanwhile, for everyone's ETA
            planned = True
            try:
                runs.write_queue_entry(run_dir, est_seconds=estimate())
            except Exception:  # noqa: BLE001  (an estimate is advice; training reports any real problem)
                pass
        place = places(root).get(run_dir.name)
        where = (place.position, place.after) if place else None
        if where != said:  # its place, not every tick of its ETA
            report(place.describe() if place else "queued")
            said = where
        cancel.wait(poll_s)


@contextmanager
def turn(config: RunConfig, cancel, estimate=None, report=None, poll_s: float = POLL_S):
    """Wait, queued, for this run's turn and hold its slot while the block runs; yields the Slot, or None when the
    run will not train (cancelled while it waited, or the run it comes after did not finish). `estimate()`: its
    training seconds, asked only if it has to wait; `report(text)` hears its place whenever it changes. The run's
    settings are checked before it waits, unless it comes after another run (its settings may name that run's
    result). An error in the block that the run did not record is recorded as its failure."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    report = report or (lambda text: print(f"{run_dir.name}: {text}", file=sys.stderr, flush=True))
    if not _join(run_dir):
        yield None
        return
    try:
        if not runs.read_queue_entry(run_dir).get("after"):
            config.validate()
        slot = _wait(run_dir, cancel, estimate, report, poll_s)
    except BaseException as exc:
        _record_failure(run_dir, exc)
        raise
    if slot is None:
        yield None
        return
    try:
        yield slot
    except BaseException as exc:
        _record_failure(run_dir, exc)
        raise
    finally:
        slot.release()


def _record_failure(run_dir: Path, exc: BaseException) -> None:
    me = os.getpid()
    still_mine = lambda s: s.get("state") in ("queued", "running") and s.get("pid") == me  # noqa: E731
    if isinstance(exc, KeyboardInterrupt):
        runs.write_status(run_dir, "cancelled", error=None, only_if=still_mine)
    else:
        runs.write_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, ConfigError)
                          else str(exc), only_if=still_mine)


def drop(run_dir: str | Path) -> None:
    """End a queued run this process held a place for and will not train, saying why when the run it comes after
    did not finish (`ftchat round --method reward-rl` when its reward model fails)."""
    run_dir = Path(run_dir)
    before = after_dir(run_dir, runs.read_queue_entry(run_dir).get("after"))
    state = live_state(before) if before is not None else None
    why = f"{before.name} ended {state}" if before is not None and state not in (None, "done") else None
    _end_unstarted(run_dir, why)


def wait_text(runs_root: str | Path, est_s: float | None) -> str:
    """For a plan: how long a run started now would wait, e.g. "2 runs ahead: starts in ≈ 4 min, done in ≈ 6 min";
    empty when it would start at once."""
    running, queued = scan(runs_root)
    place = places(runs_root, new_est_s=est_s or 1.0).get("")
    if place is None or not place.after:
        return ""
    ahead = len(running) + len(queued)
    text = f"{ahead} run{'s' if ahead != 1 else ''} ahead"
    if place.wait_s is None:
        return f"{text}: starts after {place.after}"
    text += f": starts in {about(place.wait_s)}"
    return text + (f", done in {about(place.wait_s + est_s)}" if est_s else "")
