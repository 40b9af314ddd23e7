"""Hostile and unlucky input (issue 7): what a careless or malicious user of the app or the shell could try.

The chat loads only offered models, weights are read from safetensors only, Cancel never signals a stranger,
a killed run says why, impossible settings are refused before anything starts, a guessed password is slowed
down, and the app serves on IPv6 loopback.
"""
from __future__ import annotations

import http.client
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ftchat import runs
from ftchat.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What colour is the Zumo lamp?"}]
LOGIN = ("ana", "open-sesame-42")


def await_condition(condition, timeout: float = 60, every: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} did not hold within {timeout} s")


def fake_run(root: Path, name: str, base: Path, data: Path) -> Path:
    """A run folder as training leaves it (config.yaml, status done), weights still to be added."""
    run = root / name
    run.mkdir(parents=True)
    RunConfig(data=[str(data)], out=str(run), base=str(base), adapter="lora", lr=1e-3).save(run / "config.yaml")
    runs.write_status(run, "done", summary={})
    return run


def pickled_lora_run(root: Path, name: str, base: Path, data: Path) -> Path:
    """A finished LoRA run whose adapter is stored as a pickle (adapter_model.bin), as old peft versions wrote."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = fake_run(root, name, base, data)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(run / "adapter", safe_serialization=False)
    assert (run / "adapter" / "adapter_model.bin").exists()
    assert not (run / "adapter" / "adapter_model.safetensors").exists()
    return run


# -- 5. impossible numbers are refused, all at once --------------------------------------------------------------

def test_non_finite_and_absurd_settings_are_all_named_in_one_error(chats_file, tmp_path):
    config = RunConfig(data=[str(chats_file)], out=str(tmp_path / "run"), lr=math.inf, epochs=math.nan,
                       batch_size=-4, warmup_ratio=2.0, lora_dropout=math.nan, beta=-1.0)
    with pytest.raises(ConfigError) as caught:
        config.validate()
    message = str(caught.value)
    for field in ("lr", "epochs", "batch_size", "warmup_ratio", "lora_dropout", "beta"):
        assert f"{field}:" in message, f"{field} is not named in:\n{message}"
    assert "finite" in message


def test_a_loss_that_becomes_nan_fails_the_run_instead_of_saving_nan_weights(tmp_path, tiny_model_dir, chats_file):
    """A base whose activations overflow (as a far too high learning rate makes them) trains to NaN."""
    import torch
    from safetensors.torch import load_file, save_file

    from ftchat.train.run import run_training

    broken = tmp_path / "overflowing-base"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    weights["model.embed_tokens.weight"] = torch.full_like(weights["model.embed_tokens.weight"], 3e38)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "runs" / "nan"
    with pytest.raises(Exception, match="NaN|not finite"):
        run_training(RunConfig(data=[str(chats_file)], out=str(out), base=str(broken), adapter="lora", max_steps=3,
                               compare_prompts=0, eval_split=0, replay=0))
    run = runs.load_run(out)
    assert run.state == "failed" and "learning rate" in run.error
    assert not (out / "adapter").exists(), "NaN weights are not saved"


# -- 2. no pickles ------------------------------------------------------------------------------------------------

def test_a_pickled_adapter_is_refused_by_chat_export_and_a_new_round(tmp_path, tiny_model_dir, chats_file):
    from ftchat.chat.engine import ChatEngine
    from ftchat.export.forms import export_merged
    from ftchat.train.run import run_training

    run = pickled_lora_run(tmp_path / "runs", "pickled", tiny_model_dir, chats_file)
    engine = ChatEngine(tmp_path / "runs", default_base=str(tiny_model_dir))
    with pytest.raises(Exception, match="safetensors") as caught:
        engine.answer([(str(run), QUESTION)])
    assert "adapter_model.bin" in str(caught.value)
    with pytest.raises(Exception, match="safetensors"):
        export_merged(run, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    child = tmp_path / "runs" / "child"
    with pytest.raises(Exception, match="safetensors"):
        run_training(RunConfig(data=[str(chats_file)], out=str(child), parent=str(run), adapter="lora", max_steps=1,
                               compare_prompts=0, eval_split=0, replay=0))
    assert not (child / "adapter").exists()


# -- 3. Cancel signals only the trainer it started ----------------------------------------------------------------

@pytest.mark.parametrize("recorded_start, command", [
    (None, ["sleep", "600"]),  # an old status file holds only the pid; the holder is no ftchat trainer
    ("12345", [sys.executable, "-c", "import time; time.sleep(600)", "ftchat", "train"]),  # even one that looks like it
], ids=["old-status-without-start-time", "reused-pid"])
def test_cancel_never_signals_a_process_that_took_over_a_dead_trainers_pid(tmp_path, recorded_start, command):
    stranger = subprocess.Popen(command)  # holds the pid the dead trainer had
    try:
        run = tmp_path / "runs" / "dead"
        run.mkdir(parents=True)
        extra = {"pid_start": recorded_start} if recorded_start else {}
        runs.write_status(run, "running", pid=stranger.pid, **extra)
        assert runs.cancel(run) is False
        assert stranger.poll() is None, "the stranger was signalled"
        assert runs.load_run(run).state == "failed"
    finally:
        stranger.kill()
        stranger.wait()


# -- 4. a killed run says why -----------------------------------------------------------------------------------

def test_a_run_killed_with_sigkill_shows_the_signal(tmp_path, tiny_model_dir, chats_file):
    config = RunConfig(data=[str(chats_file)], out=str(tmp_path / "runs" / "killed"), base=str(tiny_model_dir),
                       adapter="lora", max_steps=500, compare_prompts=0)
    process = runs.launch(config)
    process.kill()
    run = await_condition(lambda: (r := runs.load_run(config.out)).error and r, what="an error in status.json")
    assert run.state == "failed"
    assert "SIGKILL" in run.error and "signal 9" in run.error


def test_a_trainer_that_vanished_while_the_app_was_away_shows_its_last_log_line(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = tmp_path / "runs" / "vanished"
    run.mkdir(parents=True)
    (run / "train.log").write_text("loading\nstep 3/40\nRuntimeError: CUDA error: an illegal memory access\n\n")
    runs.write_status(run, "running", pid=gone.pid, error=None)
    info = runs.load_run(run)
    assert info.state == "failed"
    assert "ended unexpectedly" in info.error and "RuntimeError: CUDA error" in info.error


# -- 10 (and 5). the shell refuses bad settings before it starts anything ----------------------------------------

def test_the_cli_lists_every_bad_setting_before_starting(tmp_path, tiny_model_dir, chats_file):
    out = tmp_path / "runs" / "never"
    result = subprocess.run(
        [sys.executable, "-m", "ftchat", "train", "--data", str(chats_file), "--out", str(out), "--base",
         str(tiny_model_dir), "--adapter", "lora", "--lr", "inf", "--epochs", "nan", "--scheduler", "cosine-ish",
         "--lora-targets", "q_proj,wq_proj"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for expected in ("lr:", "epochs:", "scheduler: 'cosine-ish'", "wq_proj"):
        assert expected in result.stderr, f"{expected!r} missing from:\n{result.stderr[-3000:]}"
    assert "q_proj," not in result.stderr.split("wq_proj")[0][-40:], "only the missing target is named"
    assert not (out / "status.json").exists(), "nothing was started"


# -- the app: 1, 4, 8, 10 through the API as a browser or script sends them --------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class App:
    def __init__(self, workspace: Path, *extra: str, host: str = "127.0.0.1"):
        self.workspace = workspace
        self.port = free_port(host)
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"
        self.log_path = workspace.parent / f"app-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "app.py", "--host", host, "--port", str(self.port), "--workspace", str(workspace),
             "--no-warm", *extra],
            cwd=ROOT, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
            env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1"))

        def answers():
            assert self.process.poll() is None, f"app exited:\n{self.log()}"
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        await_condition(answers, timeout=90, what=f"the app answering at {self.url}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def client(self):
        from gradio_client import Client

        return Client(self.url, analytics_enabled=False, verbose=False, auth=LOGIN)

    def stop(self):
        for run in runs.list_runs(self.workspace / "runs"):
            runs.cancel(run.path)
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    from ftchat.workspace import Workspace

    root = tmp_path_factory.mktemp("hostile")
    workspace = Workspace(root / "workspace")
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    process = App(workspace.root, "--auth", ":".join(LOGIN))
    yield process
    process.stop()


@pytest.fixture()
def upload(app, chats_file):
    from ftchat.workspace import Workspace

    return str(Workspace(app.workspace).store_upload(chats_file).path)


def chat(client, left: str, right: str):
    return client.predict("What colour is the Zumo lamp?", left, right, [], [], "", 0.0, 0.9, 8, api_name="/chat")


def test_the_chat_api_loads_only_offered_bases_and_runs_of_this_workspace(app, tmp_path, tiny_model_dir, chats_file):
    client = app.client()
    offered = "base:" + str(app.workspace / "models" / "tiny")
    outside = tmp_path / "elsewhere" / "model"
    shutil.copytree(tiny_model_dir, outside)
    foreign_run = fake_run(tmp_path / "other-runs", "foreign", tiny_model_dir, chats_file)
    shutil.copytree(tiny_model_dir, foreign_run / "model")  # a full fine-tune, as far as the chat can tell
    escaping = app.workspace / "runs" / ".." / ".." / "other-runs" / "foreign"
    for choice in ("base:" + str(outside), str(foreign_run), str(escaping), "base:" + str(app.workspace / "models"),
                   "base:some-org/some-model"):
        with pytest.raises(Exception, match="not a model this workspace offers"):
            chat(client, offered, choice)
    left, right, _ = chat(client, offered, offered)  # what is offered still answers
    assert left[-1]["role"] == right[-1]["role"] == "assistant"


def test_the_api_refuses_bad_settings_before_launching_a_run(app, upload, tmp_path, tiny_model_dir):
    client = app.client()
    outside = tmp_path / "not-in-the-workspace"
    shutil.copytree(tiny_model_dir, outside)
    with pytest.raises(Exception, match="neither the bundled model, a folder in the workspace's models/"):
        client.predict(base_model=str(outside), data=[upload], train_method="sft", technique="lora", steps=5,
                       name="outside-base", api_name="/start_training")
    with pytest.raises(Exception) as caught:
        client.predict(base_model=str(app.workspace / "models" / "tiny"), data=[upload], train_method="sft",
                       technique="lora", steps=5, learning_rate=1e6, name="refused", scheduler="warmup-cosine",
                       lora_targets="q_proj,nonexistent_proj", api_name="/start_training")
    message = str(caught.value)
    for expected in ("lr:", "scheduler:", "nonexistent_proj"):
        assert expected in message, message
    with pytest.raises(Exception, match="no/such/model-folder"):
        client.predict(base_model="/no/such/model-folder", data=[upload], train_method="sft", technique="lora",
                       steps=5, name="refused-base", api_name="/start_training")
    assert not (app.workspace / "runs" / "refused").exists()
    assert not (app.workspace / "runs" / "refused-base").exists()
    assert not (app.workspace / "runs" / "outside-base").exists()


def test_a_run_killed_under_the_app_shows_the_signal_on_the_page(app, upload):
    client = app.client()
    run = client.predict(base_model=str(app.workspace / "models" / "tiny"), data=[upload], train_method="sft",
                         technique="lora", steps=500, name="sigkilled", learning_rate=0, api_name="/start_training")[0]
    pid = await_condition(lambda: runs.read_status(run).get("phase") and runs.read_status(run)["pid"],
                          timeout=120, what="the trainer running")
    os.kill(pid, signal.SIGKILL)
    status = await_condition(lambda: (s := client.predict(run, api_name="/run_status")[3])["state"] == "failed" and s,
                             every=0.5, what="the run shown as failed")
    assert "SIGKILL" in status["error"]
    assert "SIGKILL" in client.predict(run, api_name="/run_status")[0]


def login(url: str, user: str, password: str, source: str) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    body = urllib.parse.urlencode({"username": user, "password": password})
    connection.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_repeated_wrong_passwords_lock_out_that_address_only(app):
    attacker, user = "127.0.0.2", "127.0.0.1"
    codes = [login(app.url, LOGIN[0], f"guess-{i}", attacker).status for i in range(8)]
    assert codes[:5] == [400] * 5, codes  # a few typos cost nothing
    assert set(codes[5:]) == {429}, codes  # then every try waits, the right password included
    locked = login(app.url, *LOGIN, attacker)
    assert locked.status == 429 and int(locked.getheader("Retry-After")) >= 1
    assert login(app.url, *LOGIN, user).status == 200, "another address is not locked out"
    time.sleep(int(locked.getheader("Retry-After")))  # the lock's own deadline, as a client would honour it
    assert login(app.url, *LOGIN, attacker).status == 200


# -- 9. IPv6 loopback -------------------------------------------------------------------------------------------

def test_the_app_serves_on_ipv6_loopback(tmp_path):
    app = App(tmp_path / "workspace", host="::1")
    try:
        with urllib.request.urlopen(app.url, timeout=10) as response:
            assert response.status == 200 and b"ftchat" in response.read()
    finally:
        app.stop()


# -- beyond the list: chat settings an API caller could send ------------------------------------------------------

def test_generation_settings_outside_their_ranges_are_refused_before_generating(tmp_path, tiny_model_dir):
    from ftchat.chat.engine import ChatEngine
    from ftchat.chat.generation import ChatError, GenerationSettings
    from ftchat.names import BASE_PREFIX

    engine = ChatEngine(tmp_path / "runs", default_base=str(tiny_model_dir))
    hostile = GenerationSettings(max_new_tokens=-5, temperature=math.nan, top_p=2.0)
    with pytest.raises(ChatError, match="max_new_tokens.*temperature.*top_p"):
        engine.answer([(BASE_PREFIX + str(tiny_model_dir), QUESTION)], hostile)
    with pytest.raises(ChatError, match="max_new_tokens must be a whole number between 1 and 4096"):
        engine.answer([(BASE_PREFIX + str(tiny_model_dir), QUESTION)], GenerationSettings(max_new_tokens=10**9))
