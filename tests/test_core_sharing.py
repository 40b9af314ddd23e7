"""The chat and a training run share the cores: a streaming reply leaves a mark in the workspace's runs folder while it
streams, a mark its process can no longer renew stops counting within seconds, and a real trainer process trains on
one thread and at a lower priority while a mark is there and takes both back after (threads read from its
metrics.jsonl, priority from /proc)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftchat import cores, runs
from ftchat.config import RunConfig
from ftchat.names import base_choice

ROOT = Path(__file__).resolve().parents[1]
HOLD_A_MARK = "import sys, time; from ftchat import cores; cores.streaming(sys.argv[1], rows=1); " \
              "print('marked', flush=True); time.sleep(120)"


def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def autogroups() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def trainer_nice(pid: int) -> int:
    """The nice a process runs at against other sessions: its session's where the kernel weighs sessions, else its
    own."""
    if autogroups():
        return int(Path(f"/proc/{pid}/autogroup").read_text().split("nice")[-1])
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_a_reply_marks_the_workspace_while_it_streams_and_not_after(tmp_path, tiny_model_dir):
    from ftchat.chat import ChatEngine
    from ftchat.chat.generation import GenerationSettings

    runs_root = tmp_path / "runs"
    runs_root.mkdir()
    engine = ChatEngine(runs_root, default_base=str(tiny_model_dir))
    question = [{"role": "user", "content": "What does the Zumo lamp do?"}]
    pair = [(base_choice(str(tiny_model_dir)), question)] * 2  # both panes, as the Chat tab asks
    marks_seen = []
    for texts in engine.stream(pair, GenerationSettings(max_new_tokens=24)):
        if any(texts) and not marks_seen:
            marks_seen = cores.live_marks(runs_root)
    assert [(mark["pid"], mark["rows"]) for mark in marks_seen] == [(os.getpid(), 2)]
    assert cores.live_marks(runs_root) == []
    assert list(cores.marks_dir(runs_root).iterdir()) == []


def test_a_mark_its_process_no_longer_renews_expires_within_seconds(tmp_path):
    runs_root = tmp_path / "runs"
    runs_root.mkdir()
    stopped = subprocess.Popen([sys.executable, "-c", HOLD_A_MARK, str(runs_root)], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    killed = subprocess.Popen([sys.executable, "-c", HOLD_A_MARK, str(runs_root)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert stopped.stdout.readline().strip() == "marked" and killed.stdout.readline().strip() == "marked"
        time.sleep(cores.HEARTBEAT_S * 2)  # renewed meanwhile: both still count
        assert sorted(mark["pid"] for mark in cores.live_marks(runs_root)) == sorted([stopped.pid, killed.pid])

        killed.kill()  # a chat process killed mid-reply: its mark stops counting at once
        killed.wait()
        until(lambda: [m["pid"] for m in cores.live_marks(runs_root)] == [stopped.pid], 1, "the killed mark's end")

        stopped.send_signal(signal.SIGSTOP)  # alive but hung: its mark is no longer renewed
        frozen = time.monotonic()
        until(lambda: cores.live_marks(runs_root) == [], cores.STALE_S + 2, "the hung mark's expiry")
        assert time.monotonic() - frozen <= cores.STALE_S + 2
        assert list(cores.marks_dir(runs_root).iterdir()) == []  # stale marks are cleared, not left to pile up
    finally:
        for process in (stopped, killed):
            process.kill()
            process.wait()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a trainer on one core has no thread to give")
def test_a_training_run_drops_to_one_thread_while_a_reply_streams_and_takes_its_threads_back(
        tmp_path, tiny_model_dir, chats_file, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the trainer's slot: both cores of a 2-core machine
    monkeypatch.setenv("FTCHAT_CORE_SHARING", "both")
    run_dir = tmp_path / "runs" / "busy"
    process = runs.launch(RunConfig(data=[str(chats_file)], out=str(run_dir), base=str(tiny_model_dir),
                                    adapter="lora", max_steps=100_000, compare_prompts=0, eval_split=0, replay=0))

    def threads_logged() -> list[int]:
        return [row["threads"] for row in runs.read_metrics(run_dir) if "threads" in row]

    def steps_after(count: int, threads: int, n: int = 3):
        return len([t for t in threads_logged()[count:] if t == threads]) >= n

    try:
        until(lambda: threads_logged().count(2) >= 3, 180, "training on 2 threads")
        # launched as the app launches it (a session of its own): its priority drops only while a reply streams
        idle_nice = 0 if autogroups() else cores.TRAINER_NICE
        assert trainer_nice(process.pid) == idle_nice
        assert runs.read_status(run_dir)["threads"] == 2
        # the chat sees it: a pane decodes on the core the trainer leaves it, two panes on one each beside it
        assert cores.chat_threads(run_dir.parent, rows=1, cores=2) == 1
        assert cores.chat_threads(run_dir.parent, rows=2, cores=2) == 1
        monkeypatch.setenv("FTCHAT_CORE_SHARING", "nice")  # a niced trainer gives way: a pane alone takes both
        assert cores.chat_threads(run_dir.parent, rows=1, cores=2) == 2
        monkeypatch.setenv("FTCHAT_CORE_SHARING", "both")
        assert cores.chat_threads(tmp_path, rows=1, cores=2) == 2  # a workspace with no run training
        with cores.streaming(run_dir.parent, rows=1):  # a chat reply streams in this workspace
            marked = len(threads_logged())
            until(lambda: trainer_nice(process.pid) == cores.TRAINER_NICE, 2, "a lower priority at once")
            until(lambda: steps_after(marked, 1), 60, "one thread while the reply streams")
            assert all(t == 1 for t in threads_logged()[marked + 2:])  # after at most a step in flight, every step
        unmarked = len(threads_logged())
        until(lambda: steps_after(unmarked, 2), 60, "its 2 threads back once the reply ended")
        assert trainer_nice(process.pid) == idle_nice
    finally:
        runs.cancel(run_dir)
        process.wait(timeout=120)
    logged = threads_logged()
    assert logged[0] == 2 and 1 in logged and logged[-1] == 2
