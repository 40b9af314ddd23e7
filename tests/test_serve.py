"""`ftchat serve` answers the official openai client for two runs on one base, streaming and not; unknown models
get an OpenAI-style 404; off loopback it will not start without a key; `--backend vllm` builds the right command."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What colour is the Zumo lamp?"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(two_rounds, tiny_model_dir):
    """What `python -m ftchat serve --workspace W --port P --base B` runs (ftchat.serve.main: create_app, then
    uvicorn), on a thread of this process: the HTTP API is what these tests check, not the process."""
    import threading

    import openai
    import uvicorn

    from ftchat.serve import create_app

    port = _free_port()
    app = create_app(two_rounds / "runs", api_key=None, default_base=str(tiny_model_dir))
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, name="ftchat-serve", daemon=True)
    thread.start()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused-on-loopback", max_retries=0)
    deadline = time.monotonic() + 300  # a guard against a hung start, not a speed expectation
    while True:
        if not thread.is_alive():
            pytest.fail("serve exited")
        try:
            client.models.list()
            break
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                uvicorn_server.should_exit = True
                pytest.fail("serve did not answer")
            time.sleep(0.1)
    yield client
    uvicorn_server.should_exit = True
    thread.join(timeout=60)


def test_models_lists_the_base_and_both_runs(server, tiny_model_dir):
    ids = {model.id for model in server.models.list()}
    assert ids == {"base:" + str(tiny_model_dir), "a", "b"}


def test_two_runs_on_one_base_answer_and_stream_the_same_text(server, tiny_model_dir):
    replies = {}
    for model in ("a", "b", "base:" + str(tiny_model_dir)):
        done = server.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, temperature=0)
        replies[model] = done.choices[0].message.content
        assert replies[model] and done.choices[0].finish_reason in ("stop", "length")
        assert done.usage.completion_tokens > 0 and done.usage.prompt_tokens > 5
    assert len(set(replies.values())) == 3, f"each run answers with its own adapter: {replies}"
    chunks = list(server.chat.completions.create(model="b", messages=QUESTION, max_tokens=8, temperature=0,
                                                 stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1, "tokens arrive one by one"
    assert "".join(pieces) == replies["b"]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_reply_cut_where_the_context_ends_reports_length(server, tiny_model_dir):
    """The tiny model attends over 512 tokens: a 500-token conversation leaves a reply room for 12, whatever
    max_tokens asks; a reply cut there did not stop by itself, so OpenAI clients must read "length"."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = 40
    while True:  # the longest conversation of "lamp" words whose prompt stays within 500 tokens
        messages = [{"role": "user", "content": "lamp " * (words + 1)}]
        if len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]) > 500:
            break
        words += 1
    messages = [{"role": "user", "content": "lamp " * words}]
    prompt = len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"])
    assert 490 <= prompt <= 500
    done = server.chat.completions.create(model="a", messages=messages, max_tokens=200, temperature=0)
    assert done.usage.prompt_tokens == prompt
    assert 0 < done.usage.completion_tokens <= 512 - prompt
    assert done.choices[0].finish_reason == "length"
    chunks = list(server.chat.completions.create(model="a", messages=messages, max_tokens=200, temperature=0,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == done.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_an_unknown_model_is_a_404_openai_error(server):
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        server.chat.completions.create(model="../../etc", messages=QUESTION, max_tokens=4)
    assert caught.value.body["code"] == "model_not_found"


def test_off_loopback_without_a_key_refuses_to_start(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ftchat", "serve", "--host", "0.0.0.0", "--port", "1",
                             "--workspace", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "refusing to serve on 0.0.0.0 without an API key" in result.stderr


def test_a_key_is_required_when_set(tmp_path, tiny_model_dir):
    from fastapi.testclient import TestClient

    from ftchat.serve import create_app

    client = TestClient(create_app(tmp_path / "runs", api_key="s3cret-key", default_base=str(tiny_model_dir)))
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"})
    assert ok.status_code == 200 and [m["id"] for m in ok.json()["data"]] == ["base:" + str(tiny_model_dir)]


def test_vllm_command_serves_the_base_and_every_lora_run(tmp_path):
    from ftchat.serve import vllm_command

    adapters = {}
    for name, rank in (("a", 8), ("b", 32)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
        adapters[name] = tmp_path / name
    command = vllm_command("/models/smol", "smollm2-135m", adapters, "0.0.0.0", 9000, api_key="k")
    assert command[:3] == ["vllm", "serve", "/models/smol"]
    assert command[command.index("--served-model-name") + 1] == "base:smollm2-135m"
    assert command[command.index("--max-lora-rank") + 1] == "32"
    start = command.index("--lora-modules") + 1
    assert command[start:start + 2] == [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]
    assert command[-2:] == ["--api-key", "k"]
