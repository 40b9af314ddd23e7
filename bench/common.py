"""What the benches repeat: a command in a fresh process from the repo root, a `python -m ftchat train` run read back
from its folder, step rates without the warm-up steps, medians, the machine line, results files, and the app and
browser set-up of the page benches.

A bench runs as `python bench/NAME.py`, so bench/ is on sys.path and it imports this as `common`. Importing it puts
the repo root first on sys.path, so `ftchat` imports from this checkout.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUPPORT_DATA = ROOT / "data" / "quorvane_support.jsonl"
# FTCHAT_PEER_DATA: where the peer files are when ../shared is not beside the checkout (the GPU machine)
PEER_DATA = Path(os.environ.get("FTCHAT_PEER_DATA", ROOT.parent / "shared" / "peer-data"))
# the first steps carry one-off warm-up work: steady rates start at the end of step WARMUP_STEPS
WARMUP_STEPS = 2
# `ftchat train` flags that train on every row given and nothing else: no held-out split, no replay rows, and no
# post-training chat
SAME_ROWS = ("--eval-split", "0", "--replay", "0", "--compare-prompts", "0")


# ---- fresh processes ---------------------------------------------------------------------------------------------

@dataclass
class Ran:
    """A command that finished: its output, wall seconds, and the CPU seconds (user + system) of its process tree."""
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float


def run_or_explain(command: list[str], env: dict | None = None, ok: tuple[int, ...] = (0,)) -> Ran:
    """Run `command` from the repo root in a fresh process (env: its whole environment; None: this one's) and wait.
    An exit code outside `ok` stops the bench with the command and the end of its output, not a bare exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in ok:
        stdout = f"{result.stdout[-1500:]}\n" if result.stdout.strip() else ""
        raise SystemExit(f"{' '.join(command)} failed:\n{stdout}{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Ran(result.stdout, result.stderr, wall, cpu)


# ---- training runs -----------------------------------------------------------------------------------------------

@dataclass
class Trained:
    """A finished `ftchat train` run: its folder, its status.json, the rows of its metrics.jsonl, and what its process
    cost (wall and CPU seconds, loading included)."""
    out: Path
    status: dict
    metrics: list[dict]
    wall_s: float
    cpu_s: float

    @property
    def summary(self) -> dict:
        return self.status["summary"]

    def steps(self, *keys: str) -> list[dict]:
        """The metrics rows of training steps (those with a loss) that also hold every one of `keys`."""
        return [m for m in self.metrics if "loss" in m and all(k in m for k in keys)]


def ftchat_train(data: str | Path, out: str | Path, *flags: str, env: dict | None = None) -> Trained:
    """`python -m ftchat train --data DATA --out OUT FLAGS` in a fresh process from the repo root, as the app starts
    a run (so peak memory is the run's own); stops the bench if it fails; returns what the run wrote."""
    ran = run_or_explain([sys.executable, "-m", "ftchat", "train", "--data", str(data), "--out", str(out), *flags], env)
    return Trained(Path(out), read_status(out), read_metrics(out), ran.wall_s, ran.cpu_s)


def read_status(run_dir: str | Path) -> dict:
    """A run folder's status.json; {} while it has none (or an empty one)."""
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text() or "{}") if path.exists() else {}


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run folder's metrics.jsonl, in order; [] while it has none."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_for_run(run_dir: Path, timeout: float | None = None) -> dict:
    """Poll a run started elsewhere (by the app) every 2 s until its state is done, failed or cancelled; returns its
    status. TimeoutError after `timeout` seconds (None: wait as long as it takes)."""
    deadline = None if timeout is None else time.time() + timeout
    while deadline is None or time.time() < deadline:
        status = read_status(run_dir)
        if status.get("state") in ("done", "failed", "cancelled"):
            return status
        time.sleep(2)
    raise TimeoutError(run_dir)


# ---- figures -----------------------------------------------------------------------------------------------------

def step_seconds(ends: list[float], warmup: int = WARMUP_STEPS) -> list[float]:
    """Durations of steps warmup+1..N from the times at which steps 1..N ended."""
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


def steady_rate(ends: list[float], counts: list[float], warmup: int = WARMUP_STEPS) -> float:
    """Per second, from the end of step `warmup` to the end of the last step; counts[i] is the running total (of
    tokens, say) at the end of step i+1. Needs more steps than `warmup`."""
    return (counts[-1] - counts[warmup - 1]) / (ends[-1] - ends[warmup - 1])


def medians(runs: list[dict], keys) -> dict:
    """{key: the median over runs of run[key]} for each of `keys`."""
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def median_seconds(action, rounds: int = 3) -> float:
    """Median wall seconds of `action()` over `rounds` calls, one after another."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine() -> str:
    """'N CPUs, <the CPU's model name>' (the name where /proc/cpuinfo gives one)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{os.cpu_count()} CPUs" + (f", {names[0]}" if names else "")


def utc_stamp() -> str:
    """Now, as the reports date themselves: 'YYYY-MM-DD HH:MM UTC'."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


# ---- files -------------------------------------------------------------------------------------------------------

def write_json(path: str | Path, data) -> Path:
    """`data` as indented JSON (UTF-8, non-ASCII kept as is), its folder made if missing; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: str | Path, rows) -> Path:
    """One JSON object a line (UTF-8, non-ASCII kept as is); returns the path."""
    path = Path(path)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ---- the app and the browser -------------------------------------------------------------------------------------

def use_tests() -> None:
    """Put tests/ on sys.path, for the benches that reuse its helpers (AppProcess, fictional_facts, the browser's)."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(1, str(ROOT / "tests"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_quietly(command: list[str]) -> subprocess.Popen:
    """Start `command` (a server) from the repo root, its output discarded and Gradio's analytics off; the caller
    stops it."""
    return subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_page(url: str, started: float, timeout: float = 120, poll: float = 0.02) -> float:
    """Poll `url` until it answers HTTP 200; returns the seconds since `started` (a time.monotonic() reading).
    Stops the bench if it has not answered `timeout` seconds after `started`."""
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(poll)
    raise SystemExit(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def chromium_page():
    """Debian's Chromium through Playwright (as tests/test_browser.py starts it): one page the size of a laptop
    screen, patient with a busy CPU (60 s default timeout); the browser closes when the block ends."""
    from playwright.sync_api import sync_playwright

    use_tests()
    from test_browser import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()
