"""Fast chat decoding: one forward per new token on a KV cache, and many LoRA runs served by one base in one batch.

With `generate` (transformers) and peft's per-row adapters, peft walks each adapter's rows in every layer. Here
each adapted Linear keeps the LoRA factors of every run loaded on the base side by side, so a batch whose rows
use different runs (or the bare base) costs two small matmuls and a rank mask per layer, whatever the mix. `decode` then reproduces generate's greedy search and
repetition penalty exactly (tests/test_chat_speed.py compares the tokens with `generate` on a peft model).
A model given a packed decoder (`pack_for_decoding`, ftchat.chat.packed_llama: fused projections, a static cache, 4/8-bit
weights) decodes through it; any other model, or a run with LoRA outside the packed layers, through its own forward.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ftchat.chat.packed_llama import PackedLlama, packing_problem

SUPPORTED_LORA = {"peft_type": "LORA", "use_dora": False, "fan_in_fan_out": False}


class LoRARouting:
    """Which adapter each row of the current batch uses; shared by every adapted Linear of one model."""

    def __init__(self):
        self.names: tuple[str, ...] = ()  # adapters present in the batch, in rank order
        self.rank_mask: torch.Tensor | None = None  # (rows, 1, total rank), None when every row uses names[0]

    def set_rows(self, row_adapters: list[str | None], ranks: dict[str, int], dtype, device=None) -> None:
        self.names = tuple(dict.fromkeys(n for n in row_adapters if n is not None))
        if not self.names or all(n == self.names[0] for n in row_adapters):
            self.rank_mask = None
            return
        masks = []
        for name in self.names:
            rows = torch.tensor([n == name for n in row_adapters], dtype=dtype, device=device)
            masks.append(rows[:, None].expand(-1, ranks[name]))
        self.rank_mask = torch.cat(masks, dim=1)[:, None, :]


class MultiLoRALinear(nn.Module):
    """A frozen Linear plus the LoRA factors of several runs; `routing` says which rows use which."""

    def __init__(self, base: nn.Linear, routing: LoRARouting):
        super().__init__()
        self.base = base
        self.routing = routing
        self.down: dict[str, torch.Tensor] = {}  # name -> A (rank, in)
        self.up: dict[str, torch.Tensor] = {}  # name -> B * scale (out, rank)
        self._stacked: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, name: str, down: torch.Tensor, up: torch.Tensor) -> None:
        self.down[name], self.up[name] = down, up
        self._stacked.clear()

    def forward(self, x):
        out = self.base(x)
        names = self.routing.names
        if not names:
            return out
        if names not in self._stacked:
            self._stacked[names] = (torch.cat([self.down[n] for n in names]), torch.cat([self.up[n] for n in names], 1))
        down, up = self._stacked[names]
        hidden = nn.functional.linear(x, down)
        if self.routing.rank_mask is not None:
            hidden = hidden * self.routing.rank_mask
        return out + nn.functional.linear(hidden, up)


def lora_supported(adapter_dir: Path) -> bool:
    """Whether `attach_lora` can serve this adapter (plain LoRA on Linear layers); others go through peft."""
    from safetensors import safe_open

    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not (all(config.get(k, v) == v for k, v in SUPPORTED_LORA.items())
            and not config.get("modules_to_save") and not config.get("trainable_token_indices") and weights.exists()):
        return False
    with safe_open(str(weights), "pt") as saved:  # e.g. an embedding saved beside its LoRA: peft restores it
        return all(".lora_A." in key or ".lora_B." in key for key in saved.keys())


def attach_lora(model, adapter_dir: Path, name: str) -> None:
    """Add a saved LoRA run to `model` (a plain transformers model, changed in place) under `name`."""
    from safetensors.torch import load_file

    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    rank, alpha = config["r"], config["lora_alpha"]
    scale = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
    routing = getattr(model, "lora_routing", None)
    if routing is None:
        routing = model.lora_routing = LoRARouting()
        model.lora_ranks = {}
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():  # base_model.model.<module path>.lora_A.weight
        path, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        factors.setdefault(path, {})[kind.split(".")[0]] = tensor
    dtype = next(model.parameters()).dtype
    for path, pair in factors.items():  # all checked before the model changes: a bad adapter leaves it as it was
        try:
            linear = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"{adapter_dir}: LoRA on {path}, which this base does not have.") from None
        linear = getattr(linear, "base", linear)
        if set(pair) != {"A", "B"} or not isinstance(linear, nn.Linear):
            continue  # reported below
        expected = {"A": (rank, linear.in_features), "B": (linear.out_features, rank)}
        for kind, shape in expected.items():
            if tuple(pair[kind].shape) != shape:
                raise ValueError(f"{adapter_dir}: {path}.lora_{kind} has shape {tuple(pair[kind].shape)}, this base "
                                 f"needs {shape} (wrong tensor shapes for this base)")
    for path, pair in factors.items():
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model  # e.g. lm_head
        layer = getattr(parent, child)
        if not isinstance(layer, MultiLoRALinear):
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"{adapter_dir}: LoRA on {path}, a {type(layer).__name__}, is not supported here.")
            layer = MultiLoRALinear(layer, routing)
            setattr(parent, child, layer)
        layer.add(name, pair["A"].to(dtype), (pair["B"] * scale).to(dtype))
    model.lora_ranks[name] = rank


def _repetition_penalty(scores, tokens, penalty: float):
    """transformers' RepetitionPenaltyLogitsProcessor: every token already in the row (prompt included)."""
    picked = torch.gather(scores, 1, tokens)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, tokens, picked)


def _sample(scores, temperature: float, top_p: float):
    scores = scores / temperature
    if top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) > top_p  # keep the smallest set reaching top_p, at least one
        ordered = ordered.masked_fill(drop, -float("inf"))
        scores = torch.full_like(scores, -float("inf")).scatter(1, order, ordered)
    return torch.multinomial(scores.softmax(-1), 1)[:, 0]


def pack_for_decoding(model, precision: str = "auto") -> str | None:
    """Give `model` a packed decoder (ftchat.chat.packed_llama) in this precision; returns None, or why it was left as is
    (its own forward then decodes, slower but for any architecture)."""

    problem = packing_problem(model, precision)
    if problem is None:
        with torch.no_grad():  # not inference_mode: fp32 packing hands the model's Linears views of its tensors
            model.packed_decoder = PackedLlama(model, precision)
    return problem


def _transformers_step(model, row_adapters):
    """The model's own forward on a DynamicCache, with the rows' LoRA runs routed."""
    from transformers import DynamicCache

    routing = getattr(model, "lora_routing", None)
    if routing is not None:
        routing.set_rows(row_adapters, model.lora_ranks, next(model.parameters()).dtype, model.device)
    cache = DynamicCache(config=model.config)

    def step(ids, attention_mask, positions):
        return model(input_ids=ids, attention_mask=attention_mask, position_ids=positions, past_key_values=cache,
                     use_cache=True, logits_to_keep=1).logits[:, -1].float()

    return step


@torch.inference_mode()
def decode(model, input_ids, attention_mask, *, max_new_tokens: int, stop_ids: set[int], pad_token_id: int,
           repetition_penalty: float = 1.0, temperature: float = 0.0, top_p: float = 1.0,
           row_adapters: list[str | None] | None = None, on_tokens=None, threads: int | None = None) -> torch.Tensor:
    """Continue left-padded prompts; returns the new tokens (rows, n). `on_tokens(next_tokens)` sees each step.

    `row_adapters` names each row's LoRA run (None: the bare base) among those attached with `attach_lora`.
    A model given a `packed_decoder` (see `pack_for_decoding`) runs through it; any other through its own forward.
    `threads` sets torch's thread count for this call only (restored after).
    """
    rows = input_ids.shape[0]
    row_adapters = row_adapters or [None] * rows
    routing = getattr(model, "lora_routing", None)
    if routing is None and any(row_adapters):
        raise ValueError("decode: rows ask for LoRA runs, but none is attached to this model.")
    names = tuple(dict.fromkeys(n for n in row_adapters if n is not None))
    packed = getattr(model, "packed_decoder", None)
    if packed is not None and packed.covers(names):
        session = packed.session(rows, input_ids.shape[1] + max_new_tokens, row_adapters)
        step = session.forward
    else:
        step = _transformers_step(model, row_adapters)
    previous_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        tokens = input_ids
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)  # as generate does
        step_ids, step_positions = input_ids, positions
        finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=input_ids.device)
        pad = torch.tensor(pad_token_id, device=input_ids.device)
        new = []
        for _ in range(max_new_tokens):
            logits = step(step_ids, attention_mask, step_positions)
            if repetition_penalty != 1.0:
                logits = _repetition_penalty(logits, tokens, repetition_penalty)
            if temperature and temperature > 0:
                next_tokens = _sample(logits, temperature, top_p)
            else:
                next_tokens = logits.argmax(-1)
            next_tokens = torch.where(finished, pad, next_tokens)
            new.append(next_tokens)
            if on_tokens is not None:
                on_tokens(next_tokens)
            finished |= torch.isin(next_tokens, stops)
            if finished.all():
                break
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
            step_positions = step_positions[:, -1:] + 1
            step_ids = next_tokens[:, None]
        return torch.stack(new, dim=1) if new else input_ids.new_zeros(input_ids.shape[0], 0)
    finally:
        if routing is not None:
            routing.set_rows([None], {}, torch.float32)
        if threads:
            torch.set_num_threads(previous_threads)
