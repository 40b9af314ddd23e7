"""Runs wait their turn: runs started together train one after the other in real trainer processes, each queued run
knows its place, a queued run can be cancelled or moved to the front, and neither a failed run nor a killed waiter
blocks the queue. Everything is read back from the run folders, as a new process (the app after a restart) reads it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ftchat import run_queue, runs
from ftchat.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(adapter="lora", lr=1e-2, compare_prompts=0, eval_split=0, replay=0, batch_size=4)


def config(root: Path, name: str, data: Path, base: Path, steps: int = 4, **more) -> RunConfig:
    return RunConfig(data=[str(data)], out=str(root / name), base=str(base), max_steps=steps, **{**TINY, **more})


def until(check, timeout: float = 180, what: str = "it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def state(run_dir) -> str:
    return runs.load_run(run_dir).state


def waiting(run_dir) -> bool:
    """Queued, with its own trainer process waiting."""
    status = runs.read_status(run_dir)
    return status.get("state") == "queued" and runs.trainer_alive(status) if status.get("pid") else False


def ended(*run_dirs, timeout: float = 240):
    until(lambda: all(state(r) in runs.ENDED for r in run_dirs), timeout, f"the end of {[Path(r).name for r in run_dirs]}")
    return [runs.read_status(r) for r in run_dirs]


def test_runs_started_together_train_one_after_the_other_and_each_knows_its_place(tmp_path, tiny_model_dir,
                                                                                   chats_file):
    root = tmp_path / "runs"
    first = runs.launch(config(root, "a", chats_file, tiny_model_dir, steps=300))  # as the Train tab starts them; still training under load
    runs.launch(config(root, "b", chats_file, tiny_model_dir))
    shell = subprocess.Popen(  # and one from a shell, on the same workspace
        [sys.executable, "-m", "ftchat", "train", "--data", str(chats_file), "--out", str(root / "c"), "--base",
         str(tiny_model_dir), "--max-steps", "4", "--adapter", "lora", "--compare-prompts", "0", "--eval-split", "0",
         "--replay", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until(lambda: waiting(root / "c") and state(root / "a") == "running", what="a training while c waits")

    places = run_queue.places(root)
    assert (places["b"].position, places["b"].after) == (1, "a")
    assert (places["c"].position, places["c"].after) == (2, "b")
    # what another process (the app after a restart, `ftchat runs`) reads from the folders
    listing = subprocess.run([sys.executable, "-m", "ftchat", "runs", "--root", str(root)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120).stdout
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert "queued · 1st, starts after a" in lines["b"] and "queued · 2nd, starts after b" in lines["c"], listing
    assert " running " in lines["a"], listing

    out, err = shell.communicate(timeout=300)
    assert shell.returncode == 0, err[-3000:]
    # the shell run printed its place while it waited (which places it saw depends on when b's process joined)
    assert "c: queued · 1st, starts after b" in err, err[-3000:]
    assert first.wait(timeout=60) == 0
    a, b, c = ended(root / "a", root / "b", root / "c")
    assert [s["state"] for s in (a, b, c)] == ["done"] * 3
    assert b["started"] >= a["ended"] and c["started"] >= b["ended"], (a, b, c)
    assert all(s["threads"] == 1 for s in (a, b, c))  # one slot on this workspace, OMP_NUM_THREADS=1 in the tests


def test_a_cancelled_queued_run_never_starts_and_a_run_moved_to_the_front_goes_first(tmp_path, tiny_model_dir,
                                                                                     chats_file):
    root = tmp_path / "runs"
    for name, steps in (("long", 2000), ("b", 2), ("c", 2), ("d", 2)):
        runs.launch(config(root, name, chats_file, tiny_model_dir, steps=steps))
    until(lambda: state(root / "long") == "running" and all(waiting(root / n) for n in "bcd"), what="a queue of 3")

    assert runs.cancel(root / "b")
    until(lambda: state(root / "b") == "cancelled", 30, "b cancelled")
    assert run_queue.move_to_front(root / "d")
    places = run_queue.places(root)
    assert "b" not in places
    assert (places["d"].position, places["d"].after, places["c"].position, places["c"].after) == (1, "long", 2, "d")

    assert runs.cancel(root / "long")
    long, b, c, d = ended(root / "long", root / "b", root / "c", root / "d")
    assert (long["state"], b["state"], c["state"], d["state"]) == ("cancelled", "cancelled", "done", "done")
    assert b["started"] is None and not (root / "b" / "metrics.jsonl").exists() and not b["error"]
    assert long["ended"] <= d["started"] and d["ended"] <= c["started"]


def test_a_failed_run_does_not_block_and_the_run_chained_after_it_is_cancelled_with_the_reason(tmp_path,
                                                                                               tiny_model_dir,
                                                                                               chats_file):
    root = tmp_path / "runs"
    # every example is longer than 16 tokens: the trainer fails while it reads the data
    broken = config(root, "broken", chats_file, tiny_model_dir, max_length=16)
    runs.launch_chain([broken, config(root, "chained", chats_file, tiny_model_dir)])
    runs.launch(config(root, "after-it", chats_file, tiny_model_dir))
    broken_, chained, after_it = ended(root / "broken", root / "chained", root / "after-it")
    assert broken_["state"] == "failed" and "too long" in broken_["error"]
    assert chained["state"] == "cancelled" and chained["started"] is None
    assert chained["error"].startswith("broken ended failed:") and "too long" in chained["error"]
    assert after_it["state"] == "done" and after_it["started"] >= broken_["ended"]


def test_a_killed_waiter_does_not_block_the_queue(tmp_path, tiny_model_dir, chats_file):
    root = tmp_path / "runs"
    for name, steps in (("long", 2000), ("killed", 2), ("next", 2)):
        runs.launch(config(root, name, chats_file, tiny_model_dir, steps=steps))
    until(lambda: state(root / "long") == "running" and waiting(root / "killed") and waiting(root / "next"),
          what="two runs waiting")
    assert run_queue.places(root)["next"].position == 2
    os.kill(runs.read_status(root / "killed")["pid"], signal.SIGKILL)
    until(lambda: state(root / "killed") == "failed", 30, "the killed waiter seen as failed")
    assert "SIGKILL" in runs.load_run(root / "killed").error
    assert (run_queue.places(root)["next"].position, run_queue.places(root)["next"].after) == (1, "long")
    runs.cancel(root / "long")
    assert ended(root / "next")[0]["state"] == "done"


def test_two_parallel_runs_train_side_by_side_on_a_core_each(tmp_path, tiny_model_dir, chats_file):
    root = tmp_path / "runs"
    run_queue.set_parallel_runs(root, 2)
    for name in ("a", "b"):
        runs.launch(config(root, name, chats_file, tiny_model_dir, steps=30))
    a, b = ended(root / "a", root / "b")
    assert (a["state"], b["state"]) == ("done", "done")
    assert max(a["started"], b["started"]) < min(a["ended"], b["ended"]), "they overlapped"
    assert {a["slot"], b["slot"]} == {0, 1}


def test_a_slot_shares_the_cores_among_the_runs_that_train_at_once():
    assert run_queue.threads_per_run(1, cores=2) == 2
    assert run_queue.threads_per_run(2, cores=2) == 1
    assert run_queue.threads_per_run(3, cores=2) == 1
    assert run_queue.threads_per_run(1, cores=16, limit="4") == 4  # OMP_NUM_THREADS still caps it
    assert [run_queue.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 21, 22, 113)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "21st", "22nd", "113th"]


def test_an_app_restart_mid_queue_loses_nothing(tmp_path, tiny_model_dir, chats_file):
    from gradio_client import handle_file
    from test_ui_api import AppProcess, make_workspace, start_run

    workspace = make_workspace(tmp_path, tiny_model_dir)
    root, tiny = workspace / "runs", str(workspace / "models" / "tiny")
    app = AppProcess(workspace)
    try:
        client = app.client()
        data = [client.predict([handle_file(str(chats_file))], api_name="/upload")[1][0]["stored_as"]]
        start_run(client, data, base_model=tiny, steps=2000, name="long", compare_prompts=0)
        start_run(client, data, base_model=tiny, steps=2, name="queued", compare_prompts=0)
        until(lambda: state(root / "long") == "running" and waiting(root / "queued"), what="one run waiting")
    finally:
        app.process.kill()  # the app dies; its trainers (own sessions) do not
        app.process.wait()
    again = AppProcess(workspace)
    try:
        client = again.client()
        table = {row[0]: row[1] for row in client.predict(api_name="/list_runs")[0]["data"]}
        assert table["long"] == "running" and table["queued"].startswith("queued · 1st, starts after long"), table
        client.predict(str(root / "long"), api_name="/cancel_run")
        assert ended(root / "queued")[0]["state"] == "done"
    finally:
        again.stop()
