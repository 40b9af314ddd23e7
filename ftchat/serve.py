"""`ftchat serve`: an OpenAI-compatible API (/v1/models, /v1/chat/completions, streaming or not) over the chat
engine, so any OpenAI client can talk to the bases and finished runs of a workspace. Many runs share one base in
memory (see ftchat.chat). `--backend vllm` hands the same workspace to vLLM's own OpenAI server instead.
"""

import asyncio
import hmac
import json
import shutil
import threading
import time
import uuid
from pathlib import Path

from ftchat import models, runs
from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import MAX_NEW_TOKENS, ChatError, GenerationSettings
from ftchat.login import is_loopback
from ftchat.names import base_choice, is_base


def model_ids(engine: ChatEngine) -> dict[str, str]:
    """OpenAI model id -> chat engine choice: `base:NAME` for each offered base, the folder name for each
    finished run of the workspace. Only these may be loaded."""
    out = {}
    for _, choice in engine.choices():
        if is_base(choice):
            out[choice] = choice
        else:
            out[Path(choice).name] = choice
    return out


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           code: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


# the largest request body read: far past any offered model's context in text, so a bigger one is refused unread
MAX_REQUEST_BYTES = 4 * 2**20


async def _read_body(request) -> bytes | None:
    """The request's body, or None once it is over MAX_REQUEST_BYTES (by its Content-Length, or while streaming in)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# answers decoded at once (more only split the cores; each llama.cpp one holds a 4096-token context) and answers
# waiting for a turn; past both a request gets 429 with Retry-After instead of holding memory and a connection
MAX_ACTIVE_ANSWERS = 4
MAX_QUEUED_ANSWERS = 64
RETRY_AFTER_S = 1

# the request body as /openapi.json documents it (the handler checks it itself, with OpenAI-style errors)
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": {
    "type": "object", "properties": {"type": {"type": "string"}, "text": {"type": "string"}}}}]}
CHAT_REQUEST_SCHEMA = {
    "type": "object", "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
            "content": _CONTENT}}},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_NEW_TOKENS},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_NEW_TOKENS},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "n": {"type": "integer", "minimum": 1, "maximum": 1},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                           {"type": "null"}]},
        "stream": {"type": "boolean"},
        "stream_options": {"anyOf": [{"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
                                     {"type": "null"}]},
    },
}


class BadRequest(ValueError):
    """A request field of the wrong shape or value; `param` names it."""

    def __init__(self, message: str, param: str | None):
        super().__init__(message)
        self.param = param


def _number(body: dict, name: str, whole: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and value != int(value)):
        raise BadRequest(f"{name}: expected a {'whole ' if whole else ''}number, got {json.dumps(value)[:40]}.", name)
    return int(value) if whole else float(value)


def _settings(body: dict) -> GenerationSettings:
    limit = _number(body, "max_completion_tokens", whole=True) or _number(body, "max_tokens", whole=True) or 256
    settings = GenerationSettings(max_new_tokens=limit, temperature=_number(body, "temperature") or 0.0)
    if body.get("top_p") is not None:
        settings.top_p = _number(body, "top_p")
    penalty = _number(body, "frequency_penalty")
    if penalty:  # the closest knob transformers has
        settings.repetition_penalty = 1.0 + max(0.0, penalty) / 2
    try:
        return settings.check()
    except ChatError as exc:
        raise BadRequest(str(exc), "max_tokens" if "max_new_tokens" in str(exc) else None) from None


def _messages(body: dict) -> list[dict]:
    """OpenAI messages (content may be a list of text parts) as plain role/content dicts."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: give at least one message, as a list of {role, content}.", "messages")
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{index}]: expected an object with role and content.", "messages")
        role, content = message.get("role"), message.get("content")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise BadRequest(f"messages[{index}].role: '{str(role)[:40]}' is not system, user or assistant.",
                             "messages")
        if isinstance(content, list):
            if not all(isinstance(part, dict) and isinstance(part.get("text", ""), str) for part in content):
                raise BadRequest(f"messages[{index}].content: each part must be an object like "
                                 '{"type": "text", "text": "..."}.', "messages")
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        if not isinstance(content, str):
            raise BadRequest(f"messages[{index}].content: expected text.", "messages")
        out.append({"role": role, "content": content})
    return out


def _stops(body: dict) -> list[str]:
    stops = body.get("stop")
    if stops is None:
        return []
    if isinstance(stops, str):
        return [stops]
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
        raise BadRequest("stop: expected a string or a list of up to 4 strings.", "stop")
    return stops


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise BadRequest('stream_options: expected an object like {"include_usage": true}.', "stream_options")
    return bool(options.get("include_usage"))


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Admission:
    """At most `active` answers at once and `queued` waiting; past both, `enter` says no (the caller sends 429).
    Used on the event loop's thread only."""

    def __init__(self, active: int, queued: int):
        self.slots = asyncio.Semaphore(active)
        self.queued, self.waiting = queued, 0

    async def enter(self) -> bool:
        if self.slots.locked() and self.waiting >= self.queued:
            return False
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        return True

    def leave(self) -> None:
        self.slots.release()


def create_app(runs_root: str | Path, api_key: str | None = None, default_base: str = models.DEFAULT_BASE,
               engine: ChatEngine | None = None, max_active: int = MAX_ACTIVE_ANSWERS,
               max_queued: int = MAX_QUEUED_ANSWERS):
    """The FastAPI app. With `api_key`, every request needs `Authorization: Bearer KEY`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse
    from starlette.concurrency import run_in_threadpool

    engine = engine or ChatEngine(runs_root=runs_root, default_base=default_base,
                                  models_root=Path(runs_root).parent / "models")  # the workspace's models/
    tokenizers: dict[str, object] = {}
    admission = Admission(max_active, max_queued)
    app = FastAPI(title="ftchat", docs_url=None, redoc_url=None, openapi_url="/openapi.json")

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                return _error(401, "Invalid or missing API key: send Authorization: Bearer KEY.",
                              "invalid_request_error", code="invalid_api_key")
        return await call_next(request)

    def tokenizer_of(choice: str):
        base = engine.base_of(choice)
        if base not in tokenizers:
            tokenizers[base] = models.load_tokenizer(base)
        return tokenizers[base]

    @app.get("/v1/models")
    def list_models():
        now = int(time.time())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": now, "owned_by": "ftchat"}
                                           for name in model_ids(engine)]}

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": CHAT_REQUEST_SCHEMA}}}})
    async def chat_completions(request: Request):
        raw = await _read_body(request)
        if raw is None:
            return _error(413, f"The request body is over {MAX_REQUEST_BYTES // 2**20} MiB; a conversation that fits "
                               "any model's context is far smaller.", code="request_too_large")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "The request body is not JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object with model and messages.")
        name = body.get("model")
        if not isinstance(name, str):
            return _error(400, "model: expected a model id (a string); GET /v1/models lists them.", param="model")
        choice = (await run_in_threadpool(model_ids, engine)).get(name)
        if choice is None:
            return _error(404, f"The model '{name[:200]}' does not exist here; GET /v1/models lists the bases and "
                               "finished runs of this workspace.", param="model", code="model_not_found")
        try:
            conversation = _messages(body)
            settings = _settings(body)
            stops = _stops(body)
            include_usage = _include_usage(body)
            if _number(body, "n", whole=True) not in (None, 1):
                raise BadRequest("n: only one choice per request is supported.", "n")
        except BadRequest as exc:
            return _error(400, str(exc), param=exc.param)
        if not await admission.enter():
            response = _error(429, f"{max_active} answers are being decoded and {max_queued} wait; retry in "
                                   f"{RETRY_AFTER_S} s.", "rate_limit_exceeded", code="rate_limit_exceeded")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        streaming = False
        try:
            try:  # the model loads and the prompt is measured before any answer starts: errors are a plain 400
                fitted = (await run_in_threadpool(engine.check_fits, [(choice, conversation)]))[0]
            except (ChatError, models.ModelError) as exc:  # e.g. too long, a base without a chat template
                param = "messages" if "The conversation is" in str(exc) else "model"
                return _error(400, str(exc), param=param)
            completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
            created = int(time.time())

            limit = min(settings.max_new_tokens, fitted.room)  # a reply also ends where the context does

            def finish_reason(text: str, stopped: bool) -> str:
                if stopped:
                    return "stop"
                used = len(tokenizer_of(choice)(text, add_special_tokens=False).input_ids)
                return "length" if used >= limit else "stop"

            def usage(text: str) -> dict:
                tokenizer = tokenizer_of(choice)
                prompt = len(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                           return_dict=True)["input_ids"])
                completion = len(tokenizer(text, add_special_tokens=False).input_ids)
                return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

            cancel = threading.Event()
            if not body.get("stream"):
                def answer() -> str:
                    text = ""
                    for texts in engine.stream([(choice, conversation)], settings, cancel=cancel):
                        text = texts[0]
                    return text

                async def watch() -> None:  # a client that hangs up stops its answer, as a stream's does
                    # the body is read, so the server's next message is the hang-up (or the end of the response);
                    # request.is_disconnected() polls with a cancelled receive, which never saw it here
                    while (await request.receive())["type"] != "http.disconnect":
                        await asyncio.sleep(0.1)  # more body from a client that pipelines: not ours to read
                    cancel.set()

                watcher = asyncio.create_task(watch())
                try:
                    text = await run_in_threadpool(answer)
                except (ChatError, models.ModelError) as exc:
                    return _error(400, str(exc), param="model")
                finally:
                    watcher.cancel()
                text, stopped = _cut_at_stop(text, stops)
                return {"id": completion_id, "object": "chat.completion", "created": created, "model": name,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": finish_reason(text, stopped), "logprobs": None}],
                        "usage": await run_in_threadpool(usage, text)}

            def chunk(delta: dict, reason: str | None = None) -> str:
                return "data: " + json.dumps({"id": completion_id, "object": "chat.completion.chunk",
                                              "created": created, "model": name,
                                              "choices": [{"index": 0, "delta": delta, "finish_reason": reason,
                                                           "logprobs": None}]}) + "\n\n"

            def events():  # run a step at a time on worker threads by `body_of` below
                sent, stopped = "", False
                yield chunk({"role": "assistant", "content": ""})
                try:
                    for texts in engine.stream([(choice, conversation)], settings, cancel=cancel):
                        text, stopped = _cut_at_stop(texts[0], stops)
                        if len(text) > len(sent) and text.startswith(sent):
                            yield chunk({"content": text[len(sent):]})
                            sent = text
                        if stopped:
                            break
                except Exception as exc:  # the stream has started: report the error in-band, as OpenAI does
                    yield "data: " + json.dumps({"error": {"message": f"{type(exc).__name__}: {exc}",
                                                           "type": "server_error"}}) + "\n\n"
                    return
                yield chunk({}, finish_reason(sent, stopped))
                if include_usage:
                    yield "data: " + json.dumps({"id": completion_id, "object": "chat.completion.chunk",
                                                 "created": created, "model": name, "choices": [],
                                                 "usage": usage(sent)}) + "\n\n"
                yield "data: [DONE]\n\n"

            async def body_of():
                """The events, checking between them that the client is still there; when it is gone (or this
                response ends any other way) decoding stops and the answer's turn goes to the next request."""
                steps = events()
                try:
                    while not await request.is_disconnected():
                        piece = await run_in_threadpool(next, steps, None)
                        if piece is None:
                            break
                        yield piece
                finally:
                    cancel.set()
                    admission.leave()

            streaming = True
            return StreamingResponse(body_of(), media_type="text/event-stream")
        finally:
            if not streaming:
                admission.leave()

    app.state.engine = engine
    return app


# -- vLLM ---------------------------------------------------------------------------------------------------------
def lora_runs(runs_root: str | Path, base: str) -> dict[str, Path]:
    """Finished LoRA/QLoRA runs on `base`: the adapters vLLM can serve next to it (name -> adapter folder)."""
    out = {}
    for run in runs.list_runs(runs_root):
        if run.state != "done" or run.config.get("adapter") not in ("qlora", "lora"):
            continue
        if str(run.config.get("base") or models.DEFAULT_BASE) != str(base):
            continue
        out[run.name] = runs.adapter_dir(run.path)
    return out


def _lora_rank(adapters: dict[str, Path]) -> int:
    ranks = [json.loads((p / "adapter_config.json").read_text()).get("r", 16) for p in adapters.values()
             if (p / "adapter_config.json").exists()]
    wanted = max(ranks, default=16)
    return next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= wanted)  # vLLM accepts these ranks


def vllm_command(base_path: str | Path, base_name: str, adapters: dict[str, Path], host: str, port: int,
                 api_key: str | None = None, executable: str = "vllm") -> list[str]:
    """`vllm serve` with the base served as `base:NAME` and each LoRA run as its own model name."""
    command = [executable, "serve", str(base_path), "--served-model-name", base_choice(base_name),
               "--host", host, "--port", str(port)]
    if adapters:
        command += ["--enable-lora", "--max-loras", str(len(adapters)), "--max-lora-rank", str(_lora_rank(adapters)),
                    "--lora-modules", *[f"{name}={path}" for name, path in sorted(adapters.items())]]
    if api_key:
        command += ["--api-key", api_key]
    return command


def vllm_unavailable() -> str | None:
    """Why vLLM cannot start here, or None when it can."""
    if shutil.which("vllm") is None:
        return "vLLM is not installed (pip install vllm, on a Linux machine with a CUDA GPU)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
    except ImportError:
        return "torch is not installed"
    return None


# -- the command ----------------------------------------------------------------------------------------------------
def main(args) -> int:
    """`python -m ftchat serve`: refuse to serve off loopback without a key, then run uvicorn (or vLLM)."""
    import shlex
    import subprocess
    import sys


    if not is_loopback(args.host) and not args.api_key:
        print(f"error: refusing to serve on {args.host} without an API key: anyone who can reach this machine could "
              f"use your models. Add one with --api-key KEY (clients send Authorization: Bearer KEY), or serve on "
              f"this machine only with --host 127.0.0.1.", file=sys.stderr)
        return 2
    runs_root = Path(args.workspace) / "runs"
    base = args.base or models.DEFAULT_BASE
    if args.backend == "vllm":
        adapters = lora_runs(runs_root, base)
        command = vllm_command(models.resolve_base(base), base, adapters, args.host, args.port, args.api_key)
        why = vllm_unavailable()
        if why:
            print(f"error: cannot start vLLM here: {why}. On a machine with vLLM and a GPU this command serves the "
                  f"base and {len(adapters)} LoRA run(s):\n{shlex.join(command)}", file=sys.stderr)
            return 2
        print(f"ftchat serve: {shlex.join(command)}", flush=True)
        return subprocess.call(command)
    import uvicorn

    app = create_app(runs_root, api_key=args.api_key, default_base=base)
    names = ", ".join(model_ids(app.state.engine))
    print(f"ftchat serve: http://{args.host}:{args.port}/v1 (models: {names})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
