"""Turning a conversation into a reply: generation settings, the chat template, batched decoding and
streaming. Three decoders sit behind one streamer: transformers' `generate` (peft-wrapped models), ftchat's packed
decoder (ftchat.chat.decode) and llama.cpp (ftchat.chat.llamacpp); each reports the growing text of every row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


def stop_ids(generation_config, tokenizer) -> set[int]:
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

    return inputs, texts, RowStreamer(tokenizer, stop_ids(model.generation_config, tokenizer), record)


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
    """`generate_batch`'s answers through ftchat.chat.decode: the same tokens, less time per token."""
    from ftchat.chat.decode import decode  # imports torch: the chat tab loads it on the first reply, not at start

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
                    threads=None) -> str:
    """One reply through ftchat.chat.llamacpp: the same prompt tokens and token choice as `fast_generate_batch`.
    `threads`: as LlamaCppModel.generate takes them (a number, or a function asked before every token)."""
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


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system and system.strip():
        return [{"role": "system", "content": system.strip()}] + [m for m in messages if m["role"] != "system"]
    return messages
