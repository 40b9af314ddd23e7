"""Bounded work for every request; a damaged file never takes the app down (issue 18).

A gzip bomb stops at a limit, a prompt queue and a prompt have a size past which they are refused, `ftchat serve`
stops decoding for a client that went away, holds a bounded number of answers (and llama.cpp contexts) at once and
refuses the rest with 429, answers JSON of the wrong shape with an OpenAI-style 400, survives 50 concurrent clients and
a fuzzer driven by its own OpenAPI schema; a damaged, truncated or newer `feedback.sqlite` is refused untouched and
the app still starts, its Feedback tab saying what is wrong.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_serve import QUESTION, ROOT, _free_port  # noqa: E402

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def post(port: int, body, timeout: float = 120) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one non-streaming POST /v1/chat/completions."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection.request("POST", "/v1/chat/completions", body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return response.status, dict(response.getheaders()), parsed
    finally:
        connection.close()


def stream_text(port: int, body: dict, drop_after_first: bool = False, timeout: float = 120) -> str | None:
    """The streamed reply's text; with drop_after_first the client hangs up after the first content and gets None."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/chat/completions", body=json.dumps({**body, "stream": True}).encode(),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        text = ""
        for line in response:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                text += event["choices"][0]["delta"]["content"]
                if drop_after_first:
                    connection.sock.shutdown(socket.SHUT_RDWR)
                    return None
        return text
    finally:
        connection.close()


def long_context_base(tiny_model_dir: Path, to: Path) -> Path:
    """The tiny random Llama with an 8192-token context: greedy, it talks on for 4096 tokens (~5 s) without stopping."""
    shutil.copytree(tiny_model_dir, to)
    config = json.loads((to / "config.json").read_text())
    config["max_position_embeddings"] = 8192
    (to / "config.json").write_text(json.dumps(config))
    return to


class InThreadServer:
    """`ftchat serve`'s app under uvicorn on a thread of this process (as tests/test_serve.py runs it)."""

    def __init__(self, app):
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="ftchat-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=60)


# -- 4. a gzip bomb stops at the decompression limit --------------------------------------------------------------

def test_a_jsonl_gz_bomb_stops_at_the_decompressed_limit_naming_the_file(tmp_path):
    from ftchat.data import load_file
    from ftchat.data.readers import MAX_DECOMPRESSED_BYTES

    line = b" " * (2**20 - 1) + b"\n"  # blank lines: cheap to read, so the test times the limit, not JSON parsing
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range(MAX_DECOMPRESSED_BYTES // len(line) + 8):
            f.write(line)
    assert bomb.stat().st_size < MAX_DECOMPRESSED_BYTES / 500, "a bomb: small on disk, huge when read"
    started = time.monotonic()
    loaded = load_file(bomb)
    assert loaded.error and "bomb.jsonl.gz" in loaded.error
    assert f"{MAX_DECOMPRESSED_BYTES // 2**20} MB" in loaded.error and "decompress" in loaded.error
    assert time.monotonic() - started < 60


# -- 8. the prompt queue has a size limit -------------------------------------------------------------------------

def test_a_prompt_queue_past_its_limit_is_refused_naming_the_limit(tmp_path):
    from ftchat.feedback.prompt_queue import MAX_QUEUE_PROMPTS, PromptError, prompts_from_file, prompts_from_text

    assert len(prompts_from_text("ask me\n" * MAX_QUEUE_PROMPTS)) == MAX_QUEUE_PROMPTS
    with pytest.raises(PromptError, match=f"{MAX_QUEUE_PROMPTS:,}"):
        prompts_from_text("ask me\n" * (MAX_QUEUE_PROMPTS + 1))
    many = tmp_path / "many.txt"
    many.write_text("ask me\n" * (MAX_QUEUE_PROMPTS * 3))
    with pytest.raises(PromptError, match="many.txt") as caught:
        prompts_from_file(many)
    assert f"{MAX_QUEUE_PROMPTS:,}" in str(caught.value)


# -- 9, 10. a damaged or newer feedback.sqlite ---------------------------------------------------------------------

def newer_schema_file(path: Path) -> Path:
    """A feedback.sqlite as a later ftchat (schema 99) would leave it: rollback journal, one rating table."""
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE ratings (id INTEGER PRIMARY KEY, data TEXT); PRAGMA user_version = 99;")
    db.close()
    return path


def damaged_file(path: Path, how: str) -> Path:
    from ftchat.feedback.store import FeedbackStore

    if how == "newer":
        return newer_schema_file(path)
    if how == "garbage":
        path.write_bytes(b"these are not the ratings you are looking for\n" * 200)
        return path
    store = FeedbackStore(path)
    store.add_thumb(QUESTION, "teal", "base:x", 1)
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])  # "truncated": the second half lost in a copy
    return path


def test_a_newer_schema_file_is_refused_before_anything_writes_to_it(tmp_path):
    from ftchat.feedback.store import FeedbackError, FeedbackStore

    path = newer_schema_file(tmp_path / "feedback.sqlite")
    before = sha256(path)
    with pytest.raises(FeedbackError, match="newer ftchat") as caught:
        FeedbackStore(path)
    assert "feedback.sqlite" in str(caught.value)
    assert sha256(path) == before, "the file was changed before it was refused (journal mode switched to WAL?)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feedback.sqlite"], "no -wal / -shm files left beside it"


@pytest.mark.parametrize("how", ["newer", "garbage", "truncated"])
def test_the_app_starts_with_a_damaged_feedback_file_and_the_feedback_tab_says_what_to_do(tmp_path, how):
    import gradio as gr

    from ftchat.ui.app import build_app

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    path = damaged_file(workspace / "feedback.sqlite", how)
    before = sha256(path)
    demo = build_app(workspace)
    tabs = {block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)}
    assert {"1. Data", "2. Train", "3. Chat", "4. Feedback"} <= tabs
    problem = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "feedback-problem")
    assert "feedback.sqlite" in problem.value and "move it aside" in problem.value.lower(), problem.value
    assert sha256(path) == before, "the damaged file was changed"


# -- 7. a prompt longer than the model's context is refused ---------------------------------------------------------

def test_a_prompt_past_the_models_context_is_refused_with_its_size_and_the_limit(tmp_path, tiny_model_dir):
    from ftchat.chat.engine import ChatEngine
    from ftchat.chat.generation import ChatError, GenerationSettings

    engine = ChatEngine(tmp_path / "runs", default_base=str(tiny_model_dir))  # a 512-token context
    base = "base:" + str(tiny_model_dir)
    long_prompt = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(ChatError, match="512") as caught:
        engine.answer([(base, long_prompt)], GenerationSettings(max_new_tokens=4))
    assert "tokens" in str(caught.value) and "shorten" in str(caught.value)
    assert engine.answer([(base, QUESTION)], GenerationSettings(max_new_tokens=4))[0] is not None


# -- serve: wrong shapes, too long, too many -------------------------------------------------------------------------

def wrong_shape_run(run: Path, to: Path) -> Path:
    """A copy of a finished LoRA run whose adapter's tensors have the wrong shapes for its base."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(run, to)
    weights = load_file(to / "adapter" / "adapter_model.safetensors")
    save_file({k: torch.zeros(v.shape[0], v.shape[1] + 3) for k, v in weights.items()},
              to / "adapter" / "adapter_model.safetensors")
    return to


@pytest.fixture(scope="module")
def served(two_rounds, tiny_model_dir, tmp_path_factory):
    from ftchat.serve import create_app

    workspace = tmp_path_factory.mktemp("serve-bounds")
    shutil.copytree(two_rounds / "runs", workspace / "runs")
    wrong_shape_run(workspace / "runs" / "a", workspace / "runs" / "wrong")
    server = InThreadServer(create_app(workspace / "runs", api_key=None, default_base=str(tiny_model_dir)))
    yield server
    server.stop()


def test_a_request_body_past_the_limit_is_refused_unread(served):
    from ftchat.serve import MAX_REQUEST_BYTES

    huge = {"model": "a", "messages": [{"role": "user", "content": "x" * (MAX_REQUEST_BYTES + 10)}]}
    status, _, answer = post(served.port, huge)
    assert status == 413 and "MiB" in answer["error"]["message"], answer
    status, _, answer = post(served.port, {"model": "a", "messages": QUESTION, "max_tokens": 2})  # still answers
    assert status == 200, answer


@pytest.mark.parametrize("body, param", [
    (b"[1, 2, 3]", None),
    ({"model": "a", "messages": QUESTION, "stop": 5}, "stop"),
    ({"model": "a", "messages": QUESTION, "stream": True, "stream_options": "x"}, "stream_options"),
    ({"model": "a", "messages": QUESTION, "max_tokens": "many"}, "max_tokens"),
    ({"model": "a", "messages": "hello"}, "messages"),
    ({"model": "a", "messages": [{"role": "user", "content": [1]}]}, "messages"),
    ({"model": ["a"], "messages": QUESTION}, "model"),
], ids=["list-body", "stop-5", "stream-options-x", "max-tokens-text", "messages-text", "content-part-number",
        "model-list"])
def test_json_of_the_wrong_shape_is_an_openai_400_naming_the_field(served, body, param):
    status, _, answer = post(served.port, body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["message"]
    assert answer["error"]["param"] == param, answer
    if param:
        assert param in answer["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_a_run_whose_adapter_has_the_wrong_shapes_is_a_400_naming_the_run(served, stream):
    status, _, answer = post(served.port, {"model": "wrong", "messages": QUESTION, "max_tokens": 4, "stream": stream})
    assert status == 400, answer
    assert "wrong" in answer["error"]["message"] and "shape" in answer["error"]["message"], answer


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_a_prompt_past_the_context_is_an_openai_400(served, stream):
    body = {"model": "a", "messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 4, "stream": stream}
    status, _, answer = post(served.port, body)
    assert status == 400, answer
    assert answer["error"]["param"] == "messages" and "512" in answer["error"]["message"], answer


def test_past_the_answers_it_holds_serve_refuses_with_429_and_retry_after(two_rounds, tiny_model_dir, tmp_path):
    from ftchat.serve import create_app

    base = long_context_base(tiny_model_dir, tmp_path / "models" / "long")
    (tmp_path / "runs").mkdir()
    server = InThreadServer(create_app(tmp_path / "runs", default_base=str(base), max_active=1, max_queued=1))
    try:
        long_answer = {"model": "base:" + str(base), "messages": QUESTION, "max_tokens": 4096}
        busy = [threading.Thread(target=stream_text, args=(server.port, long_answer), daemon=True) for _ in range(2)]
        for thread in busy:  # one decoding, one waiting
            thread.start()
            time.sleep(0.5)
        status, headers, answer = post(server.port, {**long_answer, "max_tokens": 4})
        assert status == 429, answer
        assert int(headers["retry-after"]) >= 1 and answer["error"]["type"] == "rate_limit_exceeded"
        for thread in busy:
            thread.join(timeout=120)
        status, _, answer = post(server.port, {**long_answer, "max_tokens": 4})
        assert status == 200, answer
    finally:
        server.stop()


# -- 6. llama.cpp keeps a bounded pool of contexts and gives them back ----------------------------------------------

def test_llamacpp_holds_a_bounded_pool_of_contexts_and_returns_them_when_idle(tiny_model_dir):
    from ftchat import models
    from ftchat.chat import llamacpp
    from ftchat.chat.generation import GenerationSettings, llamacpp_answer

    if not llamacpp.available():
        pytest.skip("llama-cpp-python is not installed or does not run on this CPU")
    tokenizer = models.load_tokenizer(tiny_model_dir)
    model = llamacpp.LlamaCppModel(llamacpp.model_gguf(tiny_model_dir), None, tokenizer, {tokenizer.eos_token_id})
    loaded = rss_mb()
    answers = []

    def ask():
        answers.append(llamacpp_answer(model, QUESTION, GenerationSettings(max_new_tokens=64)))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8 and len(set(answers)) == 1, "every answer is the same greedy answer"
    assert model.contexts == 1, f"{model.contexts} llama.cpp contexts kept after the answers"
    # each 4096-token context of the tiny model holds ~22 MB (its logits buffer): 8 kept would be ~180 MB
    assert rss_mb() - loaded < 60


# -- 5, load: `ftchat serve` as a process ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def serve_process(two_rounds, tiny_model_dir, tmp_path_factory):
    """`python -m ftchat serve` on a copy of the two-rounds workspace, its default base the long-context tiny Llama."""
    workspace = tmp_path_factory.mktemp("serve-process")
    shutil.copytree(two_rounds / "runs", workspace / "runs")
    base = long_context_base(tiny_model_dir, workspace / "models" / "long")
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "ftchat", "serve", "--workspace", str(workspace), "--port",
                                str(port), "--base", str(base)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180  # a guard against a hung start
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/models")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "serve did not answer"
        time.sleep(0.2)
    process.port, process.base = port, "base:" + str(base)
    yield process
    process.terminate()
    process.wait(timeout=60)


def quiet_cpu(pid: int, seconds: float = 2.0) -> float:
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - start


def hang_up_after_a_moment(port: int, body: dict) -> None:
    """A client that asks for a whole (non-streamed) answer and gives up 0.5 s into it."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        time.sleep(0.5)
        sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "whole-answer"])
def test_serve_stops_decoding_when_a_client_goes_away(serve_process, streaming):
    port, base = serve_process.port, serve_process.base
    assert post(port, {"model": base, "messages": QUESTION, "max_tokens": 5})[0] == 200  # loaded
    long_answer = {"model": base, "messages": QUESTION, "max_tokens": 4096}
    for _ in range(3):
        if streaming:
            assert stream_text(port, long_answer, drop_after_first=True) is None
        else:
            hang_up_after_a_moment(port, long_answer)
    time.sleep(2)  # the server notices a hang-up within a token or so; the last tokens' work settles
    busy = quiet_cpu(serve_process.pid)
    started = time.monotonic()
    status, _, answer = post(port, {"model": base, "messages": QUESTION, "max_tokens": 5})
    waited = time.monotonic() - started
    assert status == 200 and answer["choices"][0]["message"]["content"]
    # three 4096-token answers nobody reads are ~15 s of decoding on this model
    assert busy < 0.3, f"the server spent {busy:.2f} s of CPU in 2 s with no client"
    assert waited < 5, f"a 5-token answer waited {waited:.1f} s"


def test_fifty_concurrent_clients_some_hanging_up_get_their_own_answers_and_memory_returns(serve_process):
    port, base = serve_process.port, serve_process.base
    requests = [{"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 12,
                 "temperature": 0}
                for model in ("a", "b", base) for question in ("What colour is the Zumo lamp?", "Who makes it?")]
    alone = [post(port, body)[2]["choices"][0]["message"]["content"] for body in requests]
    for body in requests:
        stream_text(port, body)  # every model loaded and warm before memory is measured
    before = rss_mb(serve_process.pid)

    results: dict[int, str | None] = {}
    errors: list[str] = []

    def client(index: int):
        body = requests[index % len(requests)]
        try:
            if index % 5 == 4:
                results[index] = stream_text(port, body, drop_after_first=True)
            elif index % 2:
                results[index] = stream_text(port, body)
            else:
                status, _, answer = post(port, body)
                assert status == 200, answer
                results[index] = answer["choices"][0]["message"]["content"]
        except Exception as exc:  # noqa: BLE001 - reported below with the client's number
            errors.append(f"client {index}: {type(exc).__name__}: {exc}")

    started = time.monotonic()
    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(50)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=60)
    assert time.monotonic() - started < 60 and not any(t.is_alive() for t in clients)
    assert not errors, errors
    for index, text in results.items():
        if index % 5 != 4:
            assert text == alone[index % len(requests)], f"client {index} got another answer"
    time.sleep(1)
    after = rss_mb(serve_process.pid)
    assert after <= before * 1.10, f"server RSS {before:.0f} MB before, {after:.0f} MB after"


# -- fuzz `ftchat serve` from its own OpenAPI schema ------------------------------------------------------------------

def test_serve_survives_a_fuzzer_driven_by_its_own_openapi_schema(tiny_model_dir, tmp_path):
    """schemathesis generates requests from /openapi.json (valid and invalid ones): no 500, no hang."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    from ftchat.serve import create_app

    (tmp_path / "runs").mkdir()
    server = InThreadServer(create_app(tmp_path / "runs", default_base=str(tiny_model_dir)))
    try:
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{server.port}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"GET /v1/models", "POST /v1/chat/completions"}
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def fuzz(case):
                response = case.call(timeout=30)
                assert response.status_code < 500, (case.as_curl_command(), response.text[:500])

            fuzz()
    finally:
        server.stop()
