"""Chat through llama.cpp (the `llama-cpp-python` package), where it is installed.

llama.cpp decodes the bundled GGUF about 3x faster on a CPU than ftchat's own decoder (bench/chat_speed.py). A run's
LoRA factors become a GGUF LoRA adapter (`lora_to_gguf`: the same tensors, Q/K rows permuted to llama.cpp's rotary
layout as for the base) that llama.cpp applies on top of the memory-mapped base, written beside the run's adapter
(`<run>/adapter.gguf`); a base or a whole model that has no GGUF yet is written once with ftchat.export.gguf (f16) under
models.cache_dir()/llamacpp, keyed by its path and modification time. A file older than its source is written again.

Only llama.cpp's forward pass is used: the prompt is the tokenizer's chat template encoded by the transformers
tokenizer, and each next token is picked from llama.cpp's logits by ftchat.chat.decode's own repetition penalty and
sampling, so a greedy answer is the training-side model's greedy answer up to the quantization's rounding
(tests/test_llamacpp.py compares the logits and the answers). Without the package, `available()` is False and the
chat decodes with ftchat.chat.decode.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from ftchat import models
from ftchat.chat.generation import ChatError
from ftchat.export.gguf import _permute, finish, write_gguf

# llama-cpp-python's verbose=False swaps sys.stdout/stderr (and fds 1/2) for /dev/null while it loads; two loads at
# once would restore each other's /dev/null and leave the process silent, so one load at a time
_CONSTRUCTING = threading.Lock()
N_BATCH = 128  # prompt tokens per llama.cpp batch; llama-cpp-python keeps an n_batch x vocabulary float buffer
# replies one model decodes at once, each in a context of its own (~160 MB for the bundled model's 4096 tokens: 50
# concurrent requests kept 8.2 GB); more wait their turn
MAX_CONTEXTS = 4
KEEP_IDLE_CONTEXTS = 1  # kept loaded between replies (the next one starts at once); the others are freed


_usable: bool | None = None
PROBE = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_batch=16, n_threads=1, n_threads_batch=1, verbose=False)
llm.eval([1, 2, 3])
"""


def available() -> bool:
    """Whether llama.cpp is installed and runs here. Once per process, a child process loads the shipped GGUF and
    decodes three tokens: a build that dies on this CPU (llama.cpp's AMX kernels die of SIGILL on this repo's CI
    machine) dies there, not in the app. FTCHAT_LLAMACPP=0 turns the backend off."""
    global _usable
    if _usable is None:
        _usable = _probe()
    return _usable


def _probe() -> bool:
    import importlib.util
    import logging
    import subprocess
    import sys

    if os.environ.get("FTCHAT_LLAMACPP") == "0" or importlib.util.find_spec("llama_cpp") is None:
        return False
    try:
        gguf = shipped_gguf(models.DEFAULT_BASE)
    except models.ModelError:
        return True  # nothing to try it on; a model it cannot load is answered the other way
    try:
        # at the lowest priority: the app's warm-up probes while the page starts, and must not slow it
        result = subprocess.run([sys.executable, "-c", PROBE, str(gguf)], capture_output=True, text=True, timeout=120,
                                preexec_fn=lambda: os.nice(19))
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        why = "timed out" if result is None else f"exit status {result.returncode}: {result.stderr.strip()[-300:]}"
        logging.getLogger(__name__).warning("llama.cpp is installed but failed on %s (%s); the chat uses ftchat's "
                                            "own decoder.", gguf.name, why)
        return False
    return True


def shipped_gguf(base: str) -> Path | None:
    """The GGUF a registry base ships as (the bundled SmolLM2), or None."""
    spec = models.spec_for(base)
    if spec is None or not spec.gguf_file:
        return None
    return models._bundled_gguf(spec)


def _cached(source: Path, kind: str) -> Path:
    """Where the converted file for `source` lives: keyed by its resolved path and its newest modification time."""
    source = Path(source).resolve()
    stamp = max((p.stat().st_mtime_ns for p in source.iterdir()), default=0) if source.is_dir() else 0
    key = hashlib.sha1(f"{source}|{stamp}".encode()).hexdigest()[:16]
    return models.cache_dir() / "llamacpp" / f"{kind}-{key}.gguf"


def model_gguf(folder: str | Path) -> Path:
    """A GGUF of a merged Llama folder (a base or a full run), written once (f16); GGUFExportError if it cannot be."""

    target = _cached(Path(folder), "model")
    if not target.exists():
        write_gguf(folder, target, quant="f16")
    return target


def lora_to_gguf(adapter_dir: str | Path, base_config: dict, target: str | Path) -> Path:
    """Write a peft LoRA adapter as a llama.cpp GGUF LoRA adapter, as llama.cpp's convert_lora_to_gguf.py does:
    general.type "adapter", adapter.type "lora", adapter.lora.alpha; blk.N.<tensor>.weight.lora_a = peft's lora_A
    ([rank, in]) and .lora_b = lora_B ([out, rank]), whose rows are permuted for attn_q / attn_k like the base's."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    adapter_dir, target = Path(adapter_dir), Path(target)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    rank, alpha = config["r"], float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha = alpha * rank ** 0.5  # llama.cpp scales by alpha / rank; rsLoRA's scale is alpha / sqrt(rank)
    n_layers = base_config["num_hidden_layers"]
    n_head = base_config["num_attention_heads"]
    n_kv = base_config.get("num_key_value_heads") or n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as saved:
        for key in saved.keys():  # base_model.model.<module path>.lora_A.weight
            path, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
            pairs.setdefault(path, {})[kind.split(".")[0]] = saved.get_tensor(key).float().numpy()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(partial, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for path, pair in sorted(pairs.items()):
        name = names.get_name(path + ".weight", try_suffixes=(".weight",))
        if name is None or set(pair) != {"A", "B"} or path.endswith("lm_head"):
            raise ValueError(f"{adapter_dir}: LoRA on {path} has no llama.cpp adapter tensor.")
        down, up = pair["A"], pair["B"]
        if path.endswith("q_proj"):  # B's rows are the projection's outputs: permuted as the base's rows are
            up = _permute(up, n_head, n_head)
        elif path.endswith("k_proj"):
            up = _permute(up, n_head, n_kv)
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(down, dtype=np.float32))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(up, dtype=np.float32))
    return finish(writer, partial, target)


def adapter_gguf(adapter_dir: str | Path, base: str) -> Path:
    """The run's adapter as a GGUF LoRA adapter beside it, written when missing or older than the adapter (in the
    cache where the run folder is read-only)."""
    adapter_dir = Path(adapter_dir)
    newest = max(p.stat().st_mtime_ns for p in adapter_dir.iterdir())
    target = adapter_dir.with_name(adapter_dir.name + ".gguf")
    if not os.access(adapter_dir.parent, os.W_OK):
        target = _cached(adapter_dir, "lora")
    if not target.exists() or target.stat().st_mtime_ns < newest:
        config = json.loads((models.resolve_base(base) / "config.json").read_text())
        lora_to_gguf(adapter_dir, config, target)
    return target


def _trim_heap() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise); nothing elsewhere."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class LlamaCppModel:
    """One GGUF (and optionally one LoRA adapter) answered by llama.cpp; a context per row being answered at once,
    each with its own KV cache over the same weights (memory-mapped for the base)."""

    def __init__(self, gguf: Path, lora: Path | None, tokenizer, stop_ids: set[int], threads: int | None = 1,
                 n_ctx: int = 4096):
        self.gguf, self.lora, self.tokenizer, self.stop_ids = Path(gguf), lora, tokenizer, stop_ids
        self.threads = threads or 1
        self.n_ctx = n_ctx
        self._free: list = []
        self._alive = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONTEXTS)
        self.release(self.acquire())  # load now: a bad file fails here, not in the middle of a reply

    @property
    def contexts(self) -> int:
        """llama.cpp contexts alive now (in use or kept for the next reply)."""
        return self._alive

    def acquire(self):
        """A context of its own for one reply; waits while MAX_CONTEXTS are in use."""
        self._slots.acquire()
        try:
            with self._lock:
                if self._free:
                    return self._free.pop()
            from llama_cpp import Llama

            with _CONSTRUCTING:
                llm = Llama(model_path=str(self.gguf), lora_path=str(self.lora) if self.lora else None,
                            n_ctx=self.n_ctx, n_batch=N_BATCH, n_threads=self.threads,
                            n_threads_batch=os.cpu_count() or 1, verbose=False)
            with self._lock:
                self._alive += 1
            return llm
        except BaseException:
            self._slots.release()
            raise

    def release(self, llm) -> None:
        """Give a context back: one is kept for the next reply, the others' memory is returned."""
        with self._lock:
            keep = len(self._free) < KEEP_IDLE_CONTEXTS
            if keep:
                self._free.append(llm)
            else:
                self._alive -= 1
        if not keep:
            llm.close()
            _trim_heap()
        self._slots.release()

    def generate(self, prompt_ids: list[int], *, max_new_tokens: int, repetition_penalty: float, temperature: float,
                 top_p: float, on_token, threads=None) -> None:
        """Decode after `prompt_ids`, calling on_token(id) for each new token until a stop id or max_new_tokens.
        `threads`: llama.cpp threads for this reply (default: the model's), or a function asked before every
        token (the cores a reply may use change while it streams: ftchat.cores)."""
        import llama_cpp
        import numpy as np
        import torch

        from ftchat.chat.decode import _repetition_penalty, _sample  # torch, on the first reply

        if len(prompt_ids) >= self.n_ctx:
            raise ChatError(f"The conversation is {len(prompt_ids)} tokens; this chat holds {self.n_ctx - 1}. "
                            "Start a new chat or shorten it.")
        max_new_tokens = min(max_new_tokens, self.n_ctx - len(prompt_ids))
        llm = self.acquire()
        try:
            threads_now = threads if callable(threads) else (lambda: threads or self.threads)
            using = threads_now()
            llama_cpp.llama_set_n_threads(llm.ctx, using, using)
            llm.reset()
            llm.eval(prompt_ids)
            seen = torch.tensor([prompt_ids])
            n_vocab = llm.n_vocab()
            for _ in range(max_new_tokens):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                scores = torch.from_numpy(logits.copy())[None]
                if repetition_penalty != 1.0:
                    scores = _repetition_penalty(scores, seen, repetition_penalty)
                token = int(_sample(scores, temperature, top_p)[0] if temperature > 0 else scores.argmax(-1)[0])
                on_token(token)
                if token in self.stop_ids:
                    return
                seen = torch.cat([seen, torch.tensor([[token]])], dim=1)
                if threads_now() != using:
                    using = threads_now()
                    llama_cpp.llama_set_n_threads(llm.ctx, using, using)
                llm.eval([token])
        finally:
            self.release(llm)
