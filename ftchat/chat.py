"""Chat with bases and tuned runs, side by side.

One copy of a base's weights serves every LoRA run trained on it: each run's LoRA factors are attached to the base
(ftchat.decode.attach_lora) and one batched decode gives each row its own run, or none for the plain base. Runs that
cannot share the base this way (full, layer-wise, prompt tuning, LoRA variants such as DoRA) get a model object of
their own; those wrapped by peft answer through `generate`.
"""
from __future__ import annotations

import hashlib
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ftchat import methods, models, runs

BASE_PREFIX = "base:"
# how ChatEngine decodes: auto answers the bundled GGUF base and LoRA runs on it through llama.cpp where
# llama-cpp-python is installed (ftchat.llamacpp), and packs other Llama bases (int4 where the weights are 4-bit
# already, else fp32); llamacpp also converts other Llama bases and full runs to GGUF; fp32 / int8 / int4 force the
# packed decoder's precision (ftchat.packed_llama); plain keeps transformers' forward
DECODERS = ("auto", "llamacpp", "fp32", "int8", "int4", "plain")
MAX_NEW_TOKENS = 4096  # per reply; the Chat tab's slider stops at 1024


class ChatError(RuntimeError):
    """The chat cannot run as asked; the message says why and what to do."""


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 0.9
    repetition_penalty: float = 1.1

    def check(self) -> "GenerationSettings":
        """These settings, if each is a finite number in its range; else a ChatError naming every one that is not
        (an API caller can send any number, and a billion new tokens would hold the model for hours)."""
        problems = []
        for name, low, high, whole in (("max_new_tokens", 1, MAX_NEW_TOKENS, True), ("temperature", 0, 5, False),
                                       ("top_p", 1e-6, 1, False), ("repetition_penalty", 1e-6, 10, False)):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or not low <= value <= high or (whole and value != int(value)):
                problems.append(f"{name} must be a {'whole ' if whole else ''}number between {low:g} and {high:g}, "
                                f"got {value!r}")
        if problems:
            raise ChatError("Generation settings: " + "; ".join(problems) + ".")
        return self

    def kwargs(self, tokenizer) -> dict:
        out = dict(max_new_tokens=int(self.max_new_tokens), repetition_penalty=self.repetition_penalty,
                   pad_token_id=tokenizer.pad_token_id)
        if self.temperature and self.temperature > 0:
            out.update(do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p))
        else:
            out.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return out


def render_prompts(tokenizer, conversations: list[list[dict]]) -> list[str]:
    if not tokenizer.chat_template:
        raise ChatError(
            f"{tokenizer.name_or_path} has no chat template, so it cannot tell user from assistant turns. "
            "Use an instruction-tuned model, or add a chat_template to its tokenizer_config.json."
        )
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]


def _stop_ids(generation_config, tokenizer) -> set[int]:
    ids = generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class RowStreamer:
    """A transformers streamer for a batch: decodes each row as tokens arrive and reports the growing texts."""

    def __init__(self, tokenizer, stop_ids: set[int], on_text):
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.on_text = on_text  # called with (row, text_so_far)
        self.prompt_seen = False
        self.tokens: list[list[int]] = []
        self.done: list[bool] = []

    def put(self, value):
        if not self.prompt_seen:  # generate first passes the prompt
            self.prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        if not self.tokens:
            self.tokens = [[] for _ in ids]
            self.done = [False] * len(ids)
        for row, token in enumerate(ids):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                continue
            self.tokens[row].append(token)
            self.on_text(row, self.tokenizer.decode(self.tokens[row], skip_special_tokens=True))

    def end(self):
        pass


def _left_padded(tokenizer, prompts: list[str], device):
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    try:
        return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tokenizer.padding_side = side


def _prepare(model, tokenizer, conversations, on_text):
    """Left-padded inputs, the growing replies, and a streamer that records each row's text (and calls on_text)."""
    inputs = _left_padded(tokenizer, render_prompts(tokenizer, conversations), model.device)
    texts = [""] * len(inputs["input_ids"])

    def record(row, text):
        texts[row] = text
        if on_text:
            on_text(row, text)

    return inputs, texts, RowStreamer(tokenizer, _stop_ids(model.generation_config, tokenizer), record)


def generate_batch(model, tokenizer, conversations, settings: GenerationSettings | None = None, adapter_names=None,
                   max_new_tokens: int | None = None, on_text=None) -> list[str]:
    """Answer each conversation (a list of messages) in one batched generate; returns the replies."""
    import torch

    settings = settings or GenerationSettings()
    if max_new_tokens is not None:
        settings = GenerationSettings(**{**settings.__dict__, "max_new_tokens": max_new_tokens})
    inputs, texts, streamer = _prepare(model, tokenizer, conversations, on_text)
    extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
    with torch.inference_mode():
        model.generate(**inputs, **settings.kwargs(tokenizer), streamer=streamer, **extra)
    return texts


def fast_generate_batch(model, tokenizer, conversations, settings: GenerationSettings | None = None,
                        row_adapters: list[str | None] | None = None, on_text=None, threads: int | None = None
                        ) -> list[str]:
    """`generate_batch`'s answers through ftchat.decode: the same tokens, less time per token."""
    from ftchat.decode import decode

    settings = settings or GenerationSettings()
    inputs, texts, streamer = _prepare(model, tokenizer, conversations, on_text)
    stop_ids = streamer.stop_ids
    streamer.put(inputs["input_ids"])
    sampling = settings.temperature and settings.temperature > 0
    decode(model, inputs["input_ids"], inputs["attention_mask"], max_new_tokens=int(settings.max_new_tokens),
           stop_ids=stop_ids, pad_token_id=tokenizer.pad_token_id, repetition_penalty=settings.repetition_penalty,
           temperature=float(settings.temperature) if sampling else 0.0, top_p=float(settings.top_p),
           row_adapters=row_adapters, on_tokens=lambda ids: streamer.put(ids.cpu()), threads=threads)
    return texts


def llamacpp_answer(model, conversation: list[dict], settings: GenerationSettings, on_text=None,
                    threads: int | None = None) -> str:
    """One reply through ftchat.llamacpp: the same prompt tokens and token choice as `fast_generate_batch`."""
    import torch

    tokenizer = model.tokenizer
    ids = tokenizer(render_prompts(tokenizer, [conversation])[0], add_special_tokens=False)["input_ids"]
    reply = [""]

    def record(_row, text):
        reply[0] = text
        if on_text:
            on_text(0, text)

    streamer = RowStreamer(tokenizer, model.stop_ids, record)
    streamer.prompt_seen = True
    sampling = bool(settings.temperature and settings.temperature > 0)
    model.generate(ids, max_new_tokens=int(settings.max_new_tokens), repetition_penalty=settings.repetition_penalty,
                   temperature=float(settings.temperature) if sampling else 0.0, top_p=float(settings.top_p),
                   on_token=lambda token: streamer.put(torch.tensor([token])), threads=threads)
    return reply[0]


@dataclass
class _Loaded:
    model: object
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict = field(default_factory=dict)  # run path -> adapter name


class ChatEngine:
    """Keeps loaded models and answers several panes at once.

    It loads only what it offers: the registry's bases, the default base, model folders directly under
    `models_root`, the bases its runs were trained on, and run folders directly under `runs_root`. Any other
    choice (a path elsewhere on the machine, a hub id) is a ChatError, so an API caller cannot make the server
    load arbitrary folders.
    """

    def __init__(self, runs_root: str | Path = "runs", precision: str = "auto", default_base: str = models.DEFAULT_BASE,
                 models_root: str | Path | None = None, decoder: str = "auto", decode_threads: int | None = 1):
        if decoder not in DECODERS:
            raise ChatError(f"Unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}.")
        self.runs_root = Path(runs_root)
        self.decoder = decoder
        # One thread: a decode step is hundreds of small kernels, each a barrier between threads; with another job
        # (a training run) on the cores, 2 threads waited ~20x longer per token than 1 (bench/chat_speed.py notes).
        self.decode_threads = decode_threads
        self.models_root = Path(models_root) if models_root is not None else None
        self.precision = precision
        self.default_base = default_base
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    # -- what can be picked -------------------------------------------------------------------------------------
    def choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs: each base in use, then every finished run (newest first)."""
        finished = [r for r in runs.list_runs(self.runs_root)
                    if r.state == "done" and r.config.get("method", "sft") in methods.policy_methods()]
        bases = [self.default_base] + [r.config.get("base") for r in finished]
        seen, out = set(), []
        for base in bases:
            if base and base not in seen:
                seen.add(base)
                out.append((f"base · {models.describe_base(base)}", BASE_PREFIX + base))
        for run in finished:
            cfg = run.config
            out.append((f"{run.name} · {cfg.get('method')}/{cfg.get('adapter')}", str(run.path)))
        return out

    def resolve_choice(self, choice: str) -> tuple[str, str]:
        """("base", name or folder) or ("run", run folder) for a choice this engine offers; ChatError otherwise."""
        refused = ChatError(f"{choice!r} is not a model this workspace offers: pick a base (the bundled one, a folder "
                            f"in the workspace's models/) or a run of this workspace.")
        if not isinstance(choice, str) or not choice.strip():
            raise refused
        if choice.startswith(BASE_PREFIX):
            base = choice[len(BASE_PREFIX):]
            if base == self.default_base or models.spec_for(base) is not None:
                return "base", base
            if self.models_root is not None and _directly_under(base, self.models_root) \
                    and (Path(base) / "config.json").is_file():
                return "base", base
            if base in {r.config.get("base") for r in runs.list_runs(self.runs_root)}:
                return "base", base  # what a run of this workspace was trained on (checked when it was trained)
            raise refused
        if _directly_under(choice, self.runs_root) and Path(choice).is_dir():
            return "run", choice
        raise refused

    def base_of(self, choice: str) -> str:
        kind, value = self.resolve_choice(choice)
        if kind == "base":
            return value
        run = runs.load_run(value)
        if not runs.weights_dir(value).exists():  # saved weights, not the state: comparisons run before "done"
            raise ChatError(f"{value} has no trained weights yet (state: {run.state}).")
        return run.config.get("base") or self.default_base

    # -- loading ------------------------------------------------------------------------------------------------
    def _load(self, key: str, source, packed: bool = True) -> _Loaded:
        with self._lock:
            if key not in self._loaded:
                tokenizer = models.load_tokenizer(source)
                model = models.load_model(source, precision=self.precision)
                model.eval()
                if packed and self.decoder != "plain":
                    from ftchat.decode import pack_for_decoding

                    # a model it cannot pack decodes through its own forward; llama.cpp's fallback is auto's
                    pack_for_decoding(model, "auto" if self.decoder == "llamacpp" else self.decoder)
                self._loaded[key] = _Loaded(model, tokenizer)
            return self._loaded[key]

    def _llamacpp(self, choice: str, base: str) -> _Loaded | None:
        """The llama.cpp model that answers for a choice, or None where llama.cpp does not: not installed, another
        decoder asked for, or a model it cannot take (then the chat decodes with ftchat.decode, as without it)."""
        from ftchat import llamacpp

        if self.decoder not in ("auto", "llamacpp") or not llamacpp.available():
            return None
        forced = self.decoder == "llamacpp"
        try:
            shipped = llamacpp.shipped_gguf(base)
            folder = models.resolve_base(base)  # tokenizer and generation config; a full run's own folder below
            if choice.startswith(BASE_PREFIX):
                gguf, lora = shipped, None
                if gguf is None and forced:
                    gguf = llamacpp.model_gguf(folder)
            else:
                weights = runs.weights_dir(choice)
                models.require_safetensors(weights)
                adapter_type = _adapter_type(weights)
                from ftchat.decode import lora_supported

                if adapter_type is None:  # a full or layer-wise run: a GGUF of its own
                    folder, gguf, lora = weights, llamacpp.model_gguf(weights) if forced else None, None
                elif adapter_type == "LORA" and lora_supported(weights):
                    gguf = shipped if shipped is not None or not forced else llamacpp.model_gguf(folder)
                    lora = llamacpp.adapter_gguf(weights, base) if gguf is not None else None
                else:
                    return None
        except Exception as exc:  # noqa: BLE001 - a model llama.cpp cannot take is answered the other way
            if forced:
                raise ChatError(f"llama.cpp cannot answer for {choice}: {exc}") from exc
            return None
        if gguf is None:
            return None
        key = f"llamacpp::{gguf}::{lora}"
        with self._lock:
            if key not in self._loaded:
                from transformers import GenerationConfig

                tokenizer = models.load_tokenizer(folder)
                generation = GenerationConfig.from_pretrained(folder) \
                    if (folder / "generation_config.json").exists() else GenerationConfig()
                try:  # llama.cpp refuses a file it cannot load (a wrong-shaped adapter, say) here, not mid-reply
                    model = llamacpp.LlamaCppModel(gguf, lora, tokenizer, _stop_ids(generation, tokenizer),
                                                   threads=self.decode_threads)
                except Exception as exc:  # noqa: BLE001
                    if forced:
                        raise ChatError(f"llama.cpp cannot load {gguf.name} ({lora}): {exc}") from exc
                    return None
                self._loaded[key] = _Loaded(model, tokenizer)
            return self._loaded[key]

    def _resolve(self, choice: str) -> tuple[_Loaded, str | None]:
        """The loaded model that answers for a choice and the adapter name to use (None: no adapter)."""
        base = self.base_of(choice)
        fast = self._llamacpp(choice, base)
        if fast is not None:
            return fast, None
        if choice.startswith(BASE_PREFIX):
            return self._load("base::" + base, base), None
        weights = runs.weights_dir(choice)
        adapter_type = _adapter_type(weights)
        try:
            models.require_safetensors(weights)
        except models.ModelError as exc:
            raise ChatError(str(exc)) from None
        if adapter_type is None:  # full or layer-wise run: a whole model of its own
            return self._load("model::" + str(weights), weights), None
        from ftchat.decode import attach_lora, lora_supported

        if adapter_type != "LORA" or not lora_supported(weights):  # e.g. prompt tuning: a peft model of its own
            loaded = self._load("peft::" + str(weights), base, packed=False)
            with loaded.lock:
                if not loaded.adapters:
                    from peft import PeftModel

                    loaded.model = PeftModel.from_pretrained(loaded.model, weights, adapter_name="tuned")
                    loaded.adapters[str(weights)] = "tuned"
            return loaded, None
        loaded = self._load("base::" + base, base)
        with loaded.lock:
            name = loaded.adapters.get(str(weights))
            if name is None:
                name = "run_" + hashlib.sha1(str(Path(weights).resolve()).encode()).hexdigest()[:10]
                attach_lora(loaded.model, weights, name)
                loaded.adapters[str(weights)] = name
        return loaded, name

    # -- answering ----------------------------------------------------------------------------------------------
    def stream(self, requests: list[tuple[str, list[dict]]], settings: GenerationSettings | None = None
               ) -> Iterator[list[str]]:
        """Answer (choice, conversation) pairs at once; yields the list of growing replies as tokens arrive.

        Requests that share a loaded model run as one batched generate; different models run in parallel threads.
        """
        settings = (settings or GenerationSettings()).check()
        resolved = [self._resolve(choice) for choice, _ in requests]
        from ftchat.llamacpp import LlamaCppModel

        groups: dict[tuple, list[int]] = {}
        for index, (loaded, _) in enumerate(resolved):  # llama.cpp answers each row in a context of its own
            own = isinstance(loaded.model, LlamaCppModel)
            groups.setdefault((id(loaded), index if own else None), []).append(index)
        # llama.cpp rows share the cores: one pane alone decodes on all of them (~1.6x one thread's tokens/s on 2
        # cores, even beside a training job), two panes one core each (bench/chat_speed.py)
        llama_rows = sum(isinstance(loaded.model, LlamaCppModel) for loaded, _ in resolved)
        llama_threads = max(1, (os.cpu_count() or 1) // max(llama_rows, 1))
        texts = [""] * len(requests)
        events: queue.Queue = queue.Queue()

        def work(indices: list[int]):
            loaded = resolved[indices[0]][0]
            conversations = [requests[i][1] for i in indices]
            on_text = lambda row, text: (texts.__setitem__(indices[row], text), events.put("tick"))  # noqa: E731
            try:
                if isinstance(loaded.model, LlamaCppModel):
                    llamacpp_answer(loaded.model, conversations[0], settings, on_text=on_text,
                                    threads=llama_threads)
                    events.put(("done", None))
                    return
                with loaded.lock:
                    if _is_peft(loaded.model):
                        generate_batch(loaded.model, loaded.tokenizer, conversations, settings, on_text=on_text)
                    else:
                        fast_generate_batch(loaded.model, loaded.tokenizer, conversations, settings,
                                            row_adapters=[resolved[i][1] for i in indices], on_text=on_text,
                                            threads=self.decode_threads)
                events.put(("done", None))
            except Exception as exc:  # surfaced in the caller's thread
                events.put(("done", exc))

        threads = [threading.Thread(target=work, args=(idx,), daemon=True) for idx in groups.values()]
        for thread in threads:
            thread.start()
        remaining, error = len(threads), None
        while remaining:
            event = events.get()
            if isinstance(event, tuple):
                remaining -= 1
                error = error or event[1]
            yield list(texts)
        if error is not None:
            raise error

    def answer(self, requests: list[tuple[str, list[dict]]], settings: GenerationSettings | None = None) -> list[str]:
        final = [""] * len(requests)
        for final in self.stream(requests, settings):
            pass
        return final


def _is_peft(model) -> bool:
    return type(model).__module__.startswith("peft.")


def _directly_under(path: str | Path, folder: Path) -> bool:
    """Whether `path`, with '..' and '.' worked out, is an entry of `folder` itself (not deeper, not elsewhere).
    The entry itself may be a link: only the workspace's owner can put one there."""
    try:
        return Path(os.path.abspath(path)).parent.resolve() == Path(folder).resolve()
    except (OSError, RuntimeError):
        return False


def _adapter_type(weights: Path) -> str | None:
    import json

    config = Path(weights) / "adapter_config.json"
    if not config.exists():
        return None
    return json.loads(config.read_text()).get("peft_type")


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system and system.strip():
        return [{"role": "system", "content": system.strip()}] + [m for m in messages if m["role"] != "system"]
    return messages
