"""`ftchat serve`: an OpenAI-compatible API (/v1/models, /v1/chat/completions, streaming or not) over the chat
engine, so any OpenAI client can talk to the bases and finished runs of a workspace. Many runs share one base in
memory (see ftchat.chat). `--backend vllm` hands the same workspace to vLLM's own OpenAI server instead.
"""

import hmac
import json
import shutil
import time
import uuid
from pathlib import Path

from ftchat import models, runs
from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import ChatError, GenerationSettings
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


def _settings(body: dict) -> GenerationSettings:
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 256
    settings = GenerationSettings(max_new_tokens=int(limit), temperature=float(body.get("temperature") or 0.0))
    if body.get("top_p") is not None:
        settings.top_p = float(body["top_p"])
    if body.get("frequency_penalty"):  # the closest knob transformers has
        settings.repetition_penalty = 1.0 + max(0.0, float(body["frequency_penalty"])) / 2
    return settings


def _messages(body: dict) -> list[dict]:
    """OpenAI messages (content may be a list of text parts) as plain role/content dicts."""
    out = []
    for index, message in enumerate(body.get("messages") or []):
        role, content = message.get("role"), message.get("content")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{index}].role: '{role}' is not system, user or assistant.")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        if not isinstance(content, str):
            raise ValueError(f"messages[{index}].content: expected text.")
        out.append({"role": role, "content": content})
    if not out:
        raise ValueError("messages: give at least one message.")
    return out


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def create_app(runs_root: str | Path, api_key: str | None = None, default_base: str = models.DEFAULT_BASE,
               engine: ChatEngine | None = None, max_active=None, max_queued=None):
    """The FastAPI app. With `api_key`, every request needs `Authorization: Bearer KEY`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse
    from starlette.concurrency import run_in_threadpool

    engine = engine or ChatEngine(runs_root=runs_root, default_base=default_base,
                                  models_root=Path(runs_root).parent / "models")  # the workspace's models/
    tokenizers: dict[str, object] = {}
    app = FastAPI(title="ftchat", docs_url=None, redoc_url=None, openapi_url=None)

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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not JSON.")
        name = body.get("model")
        choice = (await run_in_threadpool(model_ids, engine)).get(name)
        if choice is None:
            return _error(404, f"The model '{name}' does not exist here; GET /v1/models lists the bases and "
                               "finished runs of this workspace.", param="model", code="model_not_found")
        try:
            conversation = _messages(body)
            settings = _settings(body)
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(400, str(exc), param="messages")
        if (body.get("n") or 1) != 1:
            return _error(400, "n: only one choice per request is supported.", param="n")
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())

        def finish_reason(text: str, stopped: bool) -> str:
            if stopped:
                return "stop"
            used = len(tokenizer_of(choice)(text, add_special_tokens=False).input_ids)
            return "length" if used >= settings.max_new_tokens else "stop"

        def usage(text: str) -> dict:
            tokenizer = tokenizer_of(choice)
            prompt = len(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"])
            completion = len(tokenizer(text, add_special_tokens=False).input_ids)
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

        if not body.get("stream"):
            try:
                text = (await run_in_threadpool(engine.answer, [(choice, conversation)], settings))[0]
            except (ChatError, models.ModelError) as exc:  # e.g. a base without a chat template
                return _error(400, str(exc), param="model")
            text, stopped = _cut_at_stop(text, stops)
            return {"id": completion_id, "object": "chat.completion", "created": created, "model": name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish_reason(text, stopped), "logprobs": None}],
                    "usage": await run_in_threadpool(usage, text)}

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, reason: str | None = None) -> str:
            return "data: " + json.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                          "model": name, "choices": [{"index": 0, "delta": delta,
                                                                      "finish_reason": reason, "logprobs": None}]}
                                         ) + "\n\n"

        def events():  # a plain generator: Starlette iterates it in a worker thread
            sent, stopped = "", False
            yield chunk({"role": "assistant", "content": ""})
            try:
                for texts in engine.stream([(choice, conversation)], settings):
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

        return StreamingResponse(events(), media_type="text/event-stream")

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
