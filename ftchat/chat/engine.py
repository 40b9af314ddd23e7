"""Chat with bases and tuned runs, side by side: which models are offered, loading them once, answering panes.

One copy of a base's weights serves every LoRA run trained on it: each run's LoRA factors are attached to the base
(ftchat.chat.decode.attach_lora) and one batched decode gives each row its own run, or none for the plain base. Runs
that cannot share the base this way (full, layer-wise, prompt tuning, LoRA variants such as DoRA) get a model object
of their own; those wrapped by peft answer through `generate`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from ftchat import cores, methods, models, runs
from ftchat.chat import llamacpp
from ftchat.chat.generation import (
    ChatError,
    GenerationSettings,
    fast_generate_batch,
    generate_batch,
    llamacpp_answer,
    render_prompts,
    stop_ids,
)
from ftchat.chat.llamacpp import LlamaCppModel
from ftchat.names import base_choice, base_of_choice, is_base
from ftchat.workspace import base_label

# how ChatEngine decodes: auto answers the bundled GGUF base and LoRA runs on it through llama.cpp where
# llama-cpp-python is installed (ftchat.chat.llamacpp), and packs other Llama bases (int4 where the weights are 4-bit
# already, else fp32); llamacpp also converts other Llama bases and full runs to GGUF; fp32 / int8 / int4 force the
# packed decoder's precision (ftchat.chat.packed_llama); plain keeps transformers' forward
DECODERS = ("auto", "llamacpp", "fp32", "int8", "int4", "plain")


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
        """(label, value) of every model this engine offers, the one list the Chat tab, its API and `ftchat serve`
        show: the default base, the folders of models/, the bases runs were trained on, then every finished run
        that chats (newest first)."""
        finished = [r for r in runs.list_runs(self.runs_root)
                    if r.state == "done" and r.config.get("method", "sft") in methods.policy_methods()]
        folders = [str(p) for p in sorted(self.models_root.iterdir()) if (p / "config.json").is_file()] \
            if self.models_root is not None and self.models_root.is_dir() else []
        bases = [self.default_base] + folders + [r.config.get("base") for r in finished]
        seen, out = set(), []
        for base in bases:
            if base and base not in seen:
                seen.add(base)
                label = models.describe_base(base) if models.spec_for(base) else \
                    base_label(base, self.models_root) if self.models_root is not None else base
                out.append((f"base · {label}", base_choice(base)))
        for run in finished:
            cfg = run.config
            out.append((f"run · {run.name} · {cfg.get('method')}/{cfg.get('adapter')}", str(run.path)))
        return out

    def default_pair(self, choices: list[tuple[str, str]] | None = None) -> tuple[str | None, str | None]:
        """The pair a chat opens with. Right: the newest finished run; left: what it was trained from (its parent
        run, else its base). With no finished run, the default base on both sides."""
        values = [value for _, value in (self.choices() if choices is None else choices)]
        default = base_choice(self.default_base)
        base = default if default in values else (values[0] if values else None)
        finished = [v for v in values if not is_base(v)]
        if not finished:
            return base, base
        newest = finished[0]
        config = runs.load_run(newest).config
        parent, run_base = config.get("parent"), config.get("base")
        if parent and str(parent) in values:
            return str(parent), newest
        if run_base and base_choice(run_base) in values:
            return base_choice(run_base), newest
        return base, newest

    def resolve_choice(self, choice: str) -> tuple[str, str]:
        """("base", name or folder) or ("run", run folder) for a choice this engine offers; ChatError otherwise."""
        refused = ChatError(f"{choice!r} is not a model this workspace offers: pick a base (the bundled one, a folder "
                            f"in the workspace's models/) or a run of this workspace.")
        if not isinstance(choice, str) or not choice.strip():
            raise refused
        if is_base(choice):
            base = base_of_choice(choice)
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
                    from ftchat.chat.decode import pack_for_decoding  # torch: only once a model loads

                    # a model it cannot pack decodes through its own forward; llama.cpp's fallback is auto's
                    pack_for_decoding(model, "auto" if self.decoder == "llamacpp" else self.decoder)
                self._loaded[key] = _Loaded(model, tokenizer)
            return self._loaded[key]

    def _llamacpp(self, choice: str, base: str) -> _Loaded | None:
        """The llama.cpp model that answers for a choice, or None where llama.cpp does not: not installed, another
        decoder asked for, or a model it cannot take (then the chat decodes with ftchat.chat.decode, as without it)."""

        if self.decoder not in ("auto", "llamacpp") or not llamacpp.available():
            return None
        forced = self.decoder == "llamacpp"
        try:
            shipped = llamacpp.shipped_gguf(base)
            folder = models.resolve_base(base)  # tokenizer and generation config; a full run's own folder below
            if is_base(choice):
                gguf, lora = shipped, None
                if gguf is None and forced:
                    gguf = llamacpp.model_gguf(folder)
            else:
                weights = runs.weights_dir(choice)
                models.require_safetensors(weights)
                adapter_type = _adapter_type(weights)
                from ftchat.chat.decode import lora_supported  # torch: only once a model loads

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
                    model = llamacpp.LlamaCppModel(gguf, lora, tokenizer, stop_ids(generation, tokenizer),
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
        if is_base(choice):
            return self._load("base::" + base, base), None
        weights = runs.weights_dir(choice)
        adapter_type = _adapter_type(weights)
        try:
            models.require_safetensors(weights)
        except models.ModelError as exc:
            raise ChatError(str(exc)) from None
        if adapter_type is None:  # full or layer-wise run: a whole model of its own
            return self._load("model::" + str(weights), weights), None
        from ftchat.chat.decode import attach_lora, lora_supported  # torch: only once a model loads

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
                try:
                    attach_lora(loaded.model, weights, name)
                except (RuntimeError, ValueError, KeyError) as exc:  # tensors of another model's shapes
                    raise ChatError(f"{Path(choice).name}: its adapter does not fit the base {base} (wrong tensor "
                                    f"shapes: {str(exc)[:200]}); retrain the run on this base.") from None
                loaded.adapters[str(weights)] = name
        return loaded, name

    # -- answering ----------------------------------------------------------------------------------------------
    def check_fits(self, requests: list[tuple[str, list[dict]]]) -> list[Fitted]:
        """A `Fitted` per request; ChatError for a model that cannot load or a conversation longer than its
        model's context (the decoders would allocate a cache for all of it)."""
        out = []
        for choice, conversation in requests:
            loaded, adapter = self._resolve(choice)
            prompt = render_prompts(loaded.tokenizer, [conversation])[0]
            tokens = len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            context = _context(loaded)
            if tokens >= context:
                raise ChatError(f"The conversation is {tokens:,} tokens; {_label(choice)} holds at most "
                                f"{context - 1:,} (its context is {context} tokens). Start a new chat or shorten it.")
            out.append(Fitted(loaded, adapter, tokens, context))
        return out

    def stream(self, requests: list[tuple[str, list[dict]]], settings: GenerationSettings | None = None,
               cancel: threading.Event | None = None) -> Iterator[list[str]]:
        """Answer (choice, conversation) pairs at once; yields the list of growing replies as tokens arrive.

        Requests that share a loaded model run as one batched generate; different models run in parallel threads.
        Decoding stops at the next token once `cancel` is set or this generator is closed (a client went away).
        """
        settings = (settings or GenerationSettings()).check()
        cancel = cancel or threading.Event()
        fitted = self.check_fits(requests)
        resolved = [(item.loaded, item.adapter) for item in fitted]

        groups: dict[tuple, list[int]] = {}
        for index, (loaded, _) in enumerate(resolved):  # llama.cpp answers each row in a context of its own
            own = isinstance(loaded.model, LlamaCppModel)
            groups.setdefault((id(loaded), index if own else None), []).append(index)
        # llama.cpp rows share the cores with each other, with every other reply streaming in the workspace and with
        # its training runs: the mark tells a trainer to yield threads while these rows stream, and its `threads`
        # follows what the trainers and other chats hold (ftchat.cores; bench/chat_while_training.py)
        mark = cores.streaming(self.runs_root, rows=len(requests))
        texts = [""] * len(requests)
        events: queue.Queue = queue.Queue()
        running = [len(groups)]
        running_lock = threading.Lock()

        def finished() -> None:
            with running_lock:
                running[0] -= 1
                if not running[0]:  # the last row is answered, whether or not anyone still reads
                    mark.close()

        def work(indices: list[int]):
            loaded = resolved[indices[0]][0]
            conversations = [requests[i][1] for i in indices]
            room = min(fitted[i].room for i in indices)  # the cache ends at the context
            group_settings = dataclasses.replace(settings, max_new_tokens=min(settings.max_new_tokens, room))

            def on_text(row, text):
                if cancel.is_set():
                    raise _Cancelled
                events.put(("text", indices[row], text))

            try:
                if isinstance(loaded.model, LlamaCppModel):
                    llamacpp_answer(loaded.model, conversations[0], group_settings, on_text=on_text,
                                    threads=lambda: mark.threads)
                    events.put(("done", None))
                    return
                with loaded.lock:
                    if _is_peft(loaded.model):
                        generate_batch(loaded.model, loaded.tokenizer, conversations, group_settings,
                                       on_text=on_text)
                    else:
                        fast_generate_batch(loaded.model, loaded.tokenizer, conversations, group_settings,
                                            row_adapters=[resolved[i][1] for i in indices], on_text=on_text,
                                            threads=self.decode_threads)
                events.put(("done", None))
            except _Cancelled:
                events.put(("done", None))
            except Exception as exc:  # surfaced in the caller's thread
                events.put(("done", exc))
            finally:
                finished()

        threads = [threading.Thread(target=work, args=(idx,), daemon=True) for idx in groups.values()]
        for thread in threads:
            thread.start()
        remaining, error = len(threads), None
        try:
            while remaining:
                # everything that arrived while the reader was busy goes out as one update: a reader that falls
                # behind (a loaded server, a slow browser) catches up at once instead of replaying each token
                batch = [events.get()]
                while True:
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                for event in batch:
                    if event[0] == "text":
                        texts[event[1]] = event[2]
                    else:
                        remaining -= 1
                        error = error or event[1]
                yield list(texts)
        finally:  # closed early (nobody reads the reply any more): the decoders stop at their next token
            cancel.set()
            mark.close()
        if error is not None:
            raise error

    def answer(self, requests: list[tuple[str, list[dict]]], settings: GenerationSettings | None = None) -> list[str]:
        final = [""] * len(requests)
        for final in self.stream(requests, settings):
            pass
        return final


class Fitted(NamedTuple):
    """A request that fits its model: the model, the run's adapter (None for a base), and its sizes in tokens."""
    loaded: _Loaded
    adapter: str | None
    prompt_tokens: int
    context: int

    @property
    def room(self) -> int:
        """How many tokens a reply may have before it reaches the end of the context."""
        return self.context - self.prompt_tokens


class _Cancelled(Exception):
    """Raised inside a decoder's token callback to stop a reply nobody reads any more."""


def _context(loaded: _Loaded) -> int:
    """How many tokens (prompt and reply) the loaded model attends over."""
    if isinstance(loaded.model, LlamaCppModel):
        return loaded.model.n_ctx
    return int(getattr(loaded.model.config, "max_position_embeddings", None) or 2048)


def _label(choice: str) -> str:
    return choice if is_base(choice) else Path(choice).name


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
    config = Path(weights) / "adapter_config.json"
    if not config.exists():
        return None
    return json.loads(config.read_text()).get("peft_type")
