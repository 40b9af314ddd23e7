"""The app as a program drives it: start `python app.py` for real and use every main action through gradio_client.

Upload data and read the report, train a tiny model in a subprocess and watch it finish, chat with the base and the
tuned run, see failed and cancelled runs reported while the app keeps answering, and find everything again after a
restart.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLANK_REPLY = "(no text"  # how the chat tab marks a reply that was only whitespace


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """`python app.py` in a subprocess on a free port, with its output in WORKSPACE/../app-PORT.log. Without the
    warm-up (converting the bundled model, probing llama.cpp) unless `warm`: the tests load what they chat with."""

    def __init__(self, workspace: Path, *extra: str, warm: bool = False):
        self.workspace = workspace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = workspace.parent / f"app-{self.port}.log"
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(self.port), "--workspace", str(workspace),
             *([] if warm or "--no-warm" in extra else ["--no-warm"]), *extra],
            cwd=ROOT, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
            env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1"),
        )
        self.first_200_s = self._wait_for_page()

    def _wait_for_page(self, timeout: float = 90) -> float:
        """Seconds from process start to the first HTTP 200 for the page."""
        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"app exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"app did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def client(self, auth: tuple[str, str] | None = None):
        from gradio_client import Client

        return Client(self.url, analytics_enabled=False, verbose=False, auth=auth)

    def stop(self):
        from ftchat import runs

        for run in runs.list_runs(self.workspace / "runs"):  # no training outlives the test
            runs.cancel(run.path)
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def make_workspace(root: Path, tiny_model_dir: Path) -> Path:
    """A workspace whose models/ holds the tiny test model (so training takes seconds)."""
    workspace = root / "workspace"
    shutil.copytree(tiny_model_dir, workspace / "models" / "tiny")
    return workspace


def wait_for_state(client, run: str, states=("done", "failed", "cancelled"), timeout: float = 240,
                   until=None) -> dict:
    """Poll /run_status until the run reaches one of `states` (or `until(status)` holds)."""
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        status = client.predict(run, api_name="/run_status")[3]
        if status.get("state") in states or (until and until(status)):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run} did not reach {states} in {timeout} s; last status: {status}")


def last_reply(history: list[dict]) -> str:
    content = history[-1]["content"]
    if isinstance(content, list):  # Gradio 6 sends message content as a list of parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    assert history[-1]["role"] == "assistant"
    return content


def value_of(output):
    """A component's value, whether the app returned the value itself or an update that also sets visibility."""
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def start_run(client, data: list[str], base_model: str, **knobs):
    values = dict(base_model=base_model, data=data, train_method="sft", technique="lora", steps=6, eval_steps=3,
                  eval_split=0.1, learning_rate=0, name="", batch=4)  # the plan would hold none of 8 rows out
    values.update(knobs)
    return client.predict(**values, api_name="/start_training")[0]


# -- tests that need no running app ---------------------------------------------------------------------------

def test_serving_beyond_this_machine_without_a_login_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(free_port()), "--workspace", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "--auth user:pass" in result.stderr
    assert "0.0.0.0" in result.stderr


def test_uploads_get_safe_names_a_content_hash_and_a_size_limit(tmp_path):
    from ftchat.workspace import UploadError, Workspace

    workspace = Workspace(tmp_path / "ws", max_upload_mb=0.001)  # about 1 KB
    source = tmp_path / "weird name; rm -rf $HOME.jsonl"
    source.write_text('{"prompt": "a", "completion": "b"}\n')
    stored = workspace.store_upload(source, "../../" + source.name)
    assert stored.path.parent == workspace.uploads_dir
    assert stored.path.name.startswith("weird_name_rm_-rf_HOME-") and stored.path.suffix == ".jsonl"
    assert workspace.store_upload(source).path == stored.path  # same bytes are stored once
    assert [f.original_name for f in workspace.uploads()] == ["weird_name_rm_-rf_HOME.jsonl"]

    big = tmp_path / "big.jsonl"
    big.write_text('{"prompt": "a", "completion": "b"}\n' * 100)
    with pytest.raises(UploadError, match="over the upload limit of 1.0 KB.*--max-upload-mb"):
        workspace.store_upload(big)
    with pytest.raises(UploadError, match="cannot train on '.exe' files"):
        workspace.store_upload(big, "model.exe")


# -- one app for the story ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    workspace = make_workspace(tmp_path_factory.mktemp("ui-api"), tiny_model_dir)
    no_template = workspace / "models" / "no-template"
    shutil.copytree(tiny_model_dir, no_template)
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    process = AppProcess(workspace)
    yield process
    process.stop()


def test_the_learning_rate_hint_names_the_default_that_training_will_use():
    from ftchat.config import RunConfig
    from ftchat.ui.train_tab import lr_hint

    for base, adapter in [("smollm2-135m", "qlora"), ("smollm2-135m", "full"), ("some/hub-model", "lora")]:
        used = RunConfig(base=base, adapter=adapter).learning_rate
        assert f"({used:g})" in lr_hint(base, adapter)
    assert "(0.001)" in lr_hint("smollm2-135m", "qlora")  # the bundled model's registry value, not the generic 2e-4
    # preference and RL methods default to a tenth of it (a DPO round at the SFT rate collapsed; see methods.py)
    assert "(0.0001)" in lr_hint("smollm2-135m", "qlora", "dpo")
    assert "(2e-05)" in lr_hint("some/hub-model", "lora", "kto")
    assert "(0.001)" in lr_hint("smollm2-135m", "lora", "reward")
    assert RunConfig(method="dpo", lr=5e-4).learning_rate == 5e-4  # a rate the user gives wins


def test_upload_reports_format_shape_examples_and_skipped_rows(app, chats_file, tmp_path):
    client = app.client()
    with_bad_rows = tmp_path / "mixed.jsonl"
    with_bad_rows.write_text(chats_file.read_text() + "{not json\n"
                             + json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    from gradio_client import handle_file

    markdown, reports, histogram, preview, *_ = client.predict(
        [handle_file(str(chats_file)), handle_file(str(with_bad_rows))], api_name="/upload")
    good, mixed = reports
    assert (good["file"], good["ok"], good["format"], good["shape"], good["examples"]) == \
        ("chats.jsonl", True, "openai", "messages", 8)
    assert good["skipped"] == [] and good["tokens"]["max"] > good["tokens"]["min"] > 0
    assert (mixed["ok"], mixed["examples"]) == (True, 8)
    assert [s["line"] for s in mixed["skipped"]] == [9, 10]
    assert "| 9 |" in markdown and "| 10 |" in markdown and "usable examples** 8" in markdown
    histogram, preview = value_of(histogram), value_of(preview)
    assert sum(row[1] for row in histogram["data"]) == 16  # every usable example is in the histogram
    assert "**user:** What colour is the Zumo lamp?" in preview["data"][0][0]
    stored = Path(good["stored_as"])
    assert stored.parent == app.workspace / "uploads" and stored.read_bytes() == chats_file.read_bytes()


def test_the_same_file_uploaded_twice_at_once_is_stored_for_both(app, chats_file, tmp_path):
    """Gradio keeps an upload at a path named by its bytes: two uploads of one file share it, so a handler must never
    delete it while another still reads it (two raters, or two apps on one machine, uploading the same file)."""
    from gradio_client import handle_file

    client = app.client()
    other = tmp_path / "elsewhere" / chats_file.name
    other.parent.mkdir()
    other.write_bytes(chats_file.read_bytes())
    markdown, reports, *_ = client.predict([handle_file(str(chats_file)), handle_file(str(other))],
                                           api_name="/upload")
    assert [(r["ok"], r["examples"]) for r in reports] == [(True, 8), (True, 8)], markdown
    assert reports[0]["stored_as"] == reports[1]["stored_as"]  # the same bytes are kept once
    assert Path(reports[0]["stored_as"]).read_bytes() == chats_file.read_bytes()


def test_a_bad_file_gets_an_error_and_the_app_keeps_answering(app, tmp_path):
    from gradio_client import handle_file

    client = app.client()
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("this is not json\nnor is this\n")
    image = tmp_path / "photo.jsonl"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    markdown, reports, *_ = client.predict([handle_file(str(garbage)), handle_file(str(image))], api_name="/upload")
    assert [r["ok"] for r in reports] == [False, False]
    assert "garbage.jsonl" in reports[0]["error"] and "PNG" in reports[1]["error"]
    assert markdown.count("NOT USABLE") == 2
    markdown, reports, *_ = client.predict("quorvane_preferences.jsonl", api_name="/use_sample")  # still answering
    assert reports[0]["ok"] and reports[0]["shape"] == "preference"


def test_dpo_and_kto_are_offered_only_for_data_of_their_shape(app):
    from ftchat.ui.context import methods_for

    assert methods_for({"a": "messages", "b": "text"}) == ["sft"]
    assert methods_for({"a": "preference"}) == ["dpo", "reward"]  # a reward model learns from pairs too
    assert methods_for({"a": "prompt_only"}) == ["grpo", "rloo"]
    assert methods_for({"a": "unpaired_preference"}) == ["kto"]
    assert methods_for({"a": "preference", "b": "messages"}) == []

    client = app.client()
    pairs = client.predict("quorvane_preferences.jsonl", api_name="/use_sample")[1][0]["stored_as"]
    with pytest.raises(Exception, match="SFT cannot train on preference data; it allows DPO"):
        start_run(client, [pairs], base_model=str(app.workspace / "models" / "tiny"), train_method="sft")
    with pytest.raises(Exception, match="dpo trains with qlora, lora, full, layers, not 'prompt'"):
        start_run(client, [pairs], base_model=str(app.workspace / "models" / "tiny"), train_method="dpo",
                  technique="prompt")
    assert list((app.workspace / "runs").iterdir()) == []  # nothing was launched


def test_train_a_tiny_model_watch_it_finish_and_chat_with_base_and_run(app, chats_file):
    from gradio_client import handle_file

    client = app.client()
    reports = client.predict([handle_file(str(chats_file))], api_name="/upload")[1]
    run = start_run(client, [reports[0]["stored_as"]], base_model=str(app.workspace / "models" / "tiny"))
    assert Path(run).parent == app.workspace / "runs"

    seen_running = wait_for_state(client, run, until=lambda s: s.get("state") == "running")
    status = wait_for_state(client, run)
    assert status["state"] == "done", f"{status}\n{(Path(run) / 'train.log').read_text()[-3000:]}"
    assert status["step"] == status["max_steps"] == 6 and seen_running["state"] in ("running", "done")
    assert status["summary"]["final_loss"] > 0 and status["eval_loss"] is not None
    html, plot, log, _, comparison, *_ = client.predict(run, api_name="/run_status")
    assert "step <b>6</b> / 6" in html and "done" in html
    assert {row[2] for row in value_of(plot)["data"]} == {"train loss", "eval loss"}
    assert value_of(plot)["datatypes"] == {"step": "quantitative", "loss": "quantitative", "series": "nominal"}
    assert "done:" in log
    assert (Path(run) / "comparison.json").exists()  # compare_prompts defaults to 3: the trainer writes it
    kinds = [row[0] for row in value_of(comparison)["data"]]
    assert kinds.count("held-out") >= 1 and kinds.count("general") == 3

    table = client.predict(api_name="/list_runs")[0]
    row = dict(zip(table["headers"], next(r for r in table["data"] if r[0] == Path(run).name)))
    assert (row["status"], row["base"], row["method"], row["data"]) == ("done", "models/tiny", "sft/lora",
                                                                       "chats.jsonl")

    choices = client.predict(None, None, api_name="/models")[2]
    values = [value for _, value in choices]
    base = "base:" + str(app.workspace / "models" / "tiny")
    assert run in values and base in values
    left, right, message = client.predict("What colour is the Zumo lamp?", base, run, [], [], "", 0.0, 0.9, 128,
                                          api_name="/chat")
    for history in (left, right):
        assert [m["role"] for m in history] == ["user", "assistant"]
        reply = last_reply(history)
        assert isinstance(reply, str) and reply.strip() and not reply.startswith(BLANK_REPLY)
    assert message == ""

    # a second turn carries the history
    left2, right2, _ = client.predict("And who makes it?", base, run, left, right, "Be brief.", 0.7, 0.9, 16,
                                      api_name="/chat")
    assert [m["role"] for m in left2] == ["user", "assistant", "user", "assistant"]
    assert len(right2) == 4


def test_a_model_without_a_chat_template_gets_a_clear_message(app):
    client = app.client()
    no_template = "base:" + str(app.workspace / "models" / "no-template")
    with pytest.raises(Exception, match="no chat template"):
        client.predict("hello", no_template, no_template, [], [], "", 0.0, 0.9, 8, api_name="/chat")
    assert client.predict(api_name="/list_runs")[0]["headers"][0] == "run"  # still answering


def test_a_failed_run_shows_its_error_and_a_run_can_be_cancelled(app, chats_file):
    from gradio_client import handle_file

    client = app.client()
    data = [client.predict([handle_file(str(chats_file))], api_name="/upload")[1][0]["stored_as"]]
    with pytest.raises(Exception, match="no/such/model-folder"):  # found before anything starts
        start_run(client, data, base_model="/no/such/model-folder", name="no-base")
    assert not (app.workspace / "runs" / "no-base").exists()
    # every example is longer than 16 tokens: only the trainer, which counts them, finds out
    broken = start_run(client, data, base_model=str(app.workspace / "models" / "tiny"), name="broken", max_tokens=16)
    long = start_run(client, data, base_model=str(app.workspace / "models" / "tiny"), steps=500, name="long")

    failed = wait_for_state(client, broken)
    assert failed["state"] == "failed" and "too long" in failed["error"]
    html = client.predict(broken, api_name="/run_status")[0]
    assert "failed" in html and "Error:" in html

    wait_for_state(client, long, until=lambda s: (s.get("step") or 0) >= 1)
    client.predict(long, api_name="/cancel_run")
    cancelled = wait_for_state(client, long, timeout=120)
    assert cancelled["state"] == "cancelled" and cancelled["step"] < 500

    table = client.predict(api_name="/list_runs")[0]
    states = {r[0]: (r[1], r[-1]) for r in table["data"]}
    assert states["long"][0] == "cancelled"
    assert states["broken"][0] == "failed" and "too long" in states["broken"][1]


def test_runs_and_uploads_survive_a_restart_behind_a_login(tmp_path, tiny_model_dir, chats_file, monkeypatch):
    gradio_copies = tmp_path / "gradio"  # where this test's apps keep Gradio's copies of uploads
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_copies))
    from gradio_client import handle_file

    workspace = make_workspace(tmp_path, tiny_model_dir)
    first = AppProcess(workspace, "--no-warm")
    try:
        client = first.client()
        data = [client.predict([handle_file(str(chats_file))], api_name="/upload")[1][0]["stored_as"]]
        run = start_run(client, data, base_model=str(workspace / "models" / "tiny"), steps=2, name="kept",
                        compare_prompts=0)
        assert wait_for_state(client, run)["state"] == "done"
        before = client.predict(api_name="/list_runs")[0]["data"]
        assert "chats.jsonl" in [p.name for p in gradio_copies.rglob("*") if p.is_file()]
    finally:
        first.stop()
    assert first.process.returncode == 0, first.log()  # SIGTERM stops it as Ctrl-C does, not killed
    assert "chats.jsonl" not in [p.name for p in gradio_copies.rglob("*")]  # its upload copies went with it
    assert [r[:2] for r in before] == [["kept", "done"]]
    again = AppProcess(workspace, "--no-warm", "--auth", "ana:open-sesame")
    try:
        with pytest.raises(Exception):
            again.client()  # no login, no app
        with pytest.raises(Exception):
            again.client(auth=("ana", "wrong"))
        client = again.client(auth=("ana", "open-sesame"))
        after = client.predict(api_name="/list_runs")[0]["data"]
        assert [r[:2] for r in after] == [["kept", "done"]]
        choices = [value for _, value in client.predict(None, None, api_name="/models")[2]]
        assert str(workspace / "runs" / "kept") in choices
        uploads = sorted(p.name for p in (workspace / "uploads").iterdir() if not p.name.startswith("."))
        assert uploads == [Path(data[0]).name]
        _, reports, *_ = client.predict(str(workspace / "uploads" / uploads[0]), api_name="/inspect_upload")
        assert reports[0]["stored_as"].endswith(uploads[0]) and reports[0]["examples"] == 8
    finally:
        again.stop()


def test_the_train_tab_shows_the_planned_steps_before_start(app, chats_file):
    from gradio_client import handle_file

    client = app.client()
    stored = client.predict([handle_file(str(chats_file))], api_name="/upload")[1][0]["stored_as"]
    tiny = str(app.workspace / "models" / "tiny")
    # 8 conversations: at least 60 steps, so a small file is seen often enough to be learned (ftchat.budget)
    planned = client.predict([stored], tiny, "sft", "lora", None, None, 4, 512, api_name="/plan")
    assert planned.startswith("**Plan:** ≈ 60 steps"), planned
    assert "min on this machine" in planned or "s on this machine" in planned
    chosen = client.predict([stored], tiny, "sft", "lora", None, 12, 4, 512, api_name="/plan")
    assert chosen.startswith("**Plan:** 12 steps"), chosen  # the person's max steps win, exactly

    # Start with the form as it opens (epochs 0, max steps 0: "planned"): the run trains the plan it showed
    # (a new user's first click once failed here with "give max_steps > 0 or epochs > 0")
    run = start_run(client, [stored], tiny, n_epochs=0, steps=0, eval_steps=None, eval_split=None)
    status_file = Path(run) / "status.json"
    planned = lambda _: "plan" in json.loads(status_file.read_text() or "{}")  # noqa: E731
    wait_for_state(client, run, until=planned)
    plan = json.loads(status_file.read_text())["plan"]  # what the trainer planned, from its run folder
    assert plan["steps"] == 60 and "steps" in plan["chosen"], plan
    client.predict(run, api_name="/cancel_run")
    wait_for_state(client, run, ("cancelled", "done"))
