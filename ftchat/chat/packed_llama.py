"""A compact Llama forward for chat decoding on CPU: each layer's weights packed (q/k/v as one matrix, gate/up as
one), in fp32 or int8, a static KV cache, and the LoRA runs attached by ftchat.chat.decode stacked on top in fp32.

It reads the weights of a loaded transformers Llama and runs its arithmetic (RMSNorm, the model's own rotary
embedding, SDPA over grouped KV heads, SiLU MLP) without transformers' per-call machinery (cache objects, mask
building, output records), which at batch 1 costs more than the matmuls. int8 is per-output-channel symmetric
weights with dynamically quantized activations (torch's fbgemm/x86 `quantized::linear_dynamic`), the LM head
included: a quarter of the bytes read per token. `packing_problem` says why a model cannot be packed; the caller
then keeps transformers' forward.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DECODE_PRECISIONS = ("auto", "fp32", "int8", "int4")


def packing_problem(model, precision: str) -> str | None:
    """None when `PackedLlama(model, precision)` reproduces the model's forward; else the reason it cannot."""
    config = model.config
    if precision not in DECODE_PRECISIONS:
        return f"unknown precision {precision!r} (one of {', '.join(DECODE_PRECISIONS)})"
    if type(model).__name__ != "LlamaForCausalLM":
        return f"{type(model).__name__} is not a plain LlamaForCausalLM"
    if getattr(config, "hidden_act", None) != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "only SiLU MLPs without tensor-parallel slicing are packed"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "biases in attention or MLP are not packed"
    if model.device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        return "only fp32 weights on the CPU are packed"
    for name, module in model.named_modules():
        base = getattr(module, "base", None)
        if name.endswith(("_proj", "lm_head")) and not isinstance(base if base is not None else module, nn.Linear):
            return f"{name} is a {type(module).__name__}, not a plain Linear"
    if precision == "int4" and any(layer.mlp.down_proj.weight.shape[1] % GROUP or config.hidden_size % GROUP
                                   for layer in model.model.layers[:1]):
        return f"int4 needs input sizes divisible by {GROUP}"
    return None


def _linear(module) -> nn.Linear:
    return getattr(module, "base", module)  # a MultiLoRALinear wraps the base Linear


class Projection:
    """One matmul over the concatenated weights of `linears` (their outputs side by side), in `precision`:
    fp32, int8 (per output channel), int4 (groups of 32 inputs), or auto: int4 when the weights already are 4-bit
    group values (a base converted from a Q4 GGUF, so nothing is lost), else fp32."""

    def __init__(self, linears: list[nn.Linear], precision: str):
        weights = [lin.weight.data for lin in linears]
        weight = torch.cat(weights) if len(weights) > 1 else weights[0]
        self.linears = linears  # the model's own fp32 weights, for prompts (the 4/8-bit kernels are GEMVs)
        self.kind = precision
        if precision == "auto" and weight.shape[1] % GROUP:
            self.kind = "fp32"
        elif precision in ("int4", "auto"):
            codes, scale, low = _int4_codes(weight)
            # fp32 rounding of the converted GGUF values stays far below a thousandth of a step
            lossless = bool(((codes * scale + low - weight.view_as(codes)).abs() <= 1e-3 * scale).all())
            if precision == "int4" or lossless:
                self.kind = "int4"
                self.weight, self.scales_zeros = _int4_pack(codes, scale, low)
            else:
                self.kind = "fp32"
        if self.kind == "int8":
            scales = (weight.abs().amax(1) / 127).clamp(min=1e-12)
            self.weight = (weight / scales[:, None]).round().to(torch.int8)
            self.scales = scales.to(torch.bfloat16)
        elif self.kind == "fp32":
            self.weight = weight
            if len(linears) > 1:  # let the model's own Linears read views of the packed matrix: no second copy
                start = 0
                for lin in linears:
                    rows = lin.weight.shape[0]
                    lin.weight.data = weight[start:start + rows]
                    start += rows

    def __call__(self, x):
        if self.kind == "fp32":
            return F.linear(x, self.weight)
        if x.numel() >= FP32_ROWS * x.shape[-1]:
            return torch.cat([F.linear(x, lin.weight) for lin in self.linears], dim=-1)
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # the CPU kernels are fast for bf16 activations only
        if self.kind == "int4":
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, GROUP, self.scales_zeros)
        else:
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
        return out.view(*x.shape[:-1], -1).float()


FP32_ROWS = 16  # from this many tokens in one forward (a prompt), fp32 weights are faster than 4/8-bit kernels
RESCORED = 64  # a quantized head's top candidates whose logits are computed again in fp32
GROUP = 32  # llama.cpp's Q4_0/Q4_1 block: a base converted from such a GGUF is exactly 4-bit in these groups


def _int4_codes(weight):
    """Asymmetric 4-bit codes per group of 32 inputs, as GGUF Q4_1: weight ~ codes * scale + low."""
    rows, cols = weight.shape
    groups = weight.view(rows, cols // GROUP, GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-12)
    return ((groups - low) / scale).round().clamp(0, 15), scale, low


def _int4_pack(codes, scale, low):
    """The codes packed for torch's CPU int4 kernel, which reads w = (q - 8) * scale + zero per (group, output)."""
    rows = codes.shape[0]
    scales_zeros = torch.stack([scale[..., 0].t(), (low + 8 * scale)[..., 0].t()], dim=-1)
    return (torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.view(rows, -1).to(torch.int32), 1),
            scales_zeros.to(torch.bfloat16).contiguous())


class LoRASite:
    """The LoRA runs on one packed projection: every run's A stacked, every run's B placed block-diagonally, so a
    batch with any mix of runs costs two small matmuls (and a rank mask when rows differ)."""

    def __init__(self, parents_children: list[tuple[nn.Module, str]]):
        self.places = parents_children  # looked up at use: attach_lora swaps a Linear for a MultiLoRALinear
        self.outputs = [_linear(getattr(p, c)).weight.shape[0] for p, c in parents_children]
        self._stacked: dict[tuple, tuple | None] = {}

    def stacked(self, names: tuple[str, ...]):
        """(down (in, R), up (R, out), run index of each rank column) for these runs; None when none adapts here."""
        if names not in self._stacked:
            offsets = [sum(self.outputs[:i]) for i in range(len(self.outputs))]
            downs, placed, owners = [], [], []
            for run, name in enumerate(names):
                for (parent, child), offset in zip(self.places, offsets):
                    module = getattr(parent, child)
                    if name in getattr(module, "down", {}):
                        downs.append(module.down[name])
                        placed.append((offset, module.up[name]))
                        owners += [run] * module.down[name].shape[0]
            if not downs:
                self._stacked[names] = None
            else:
                down = torch.cat(downs)
                up = down.new_zeros(sum(self.outputs), down.shape[0])
                column = 0
                for offset, block in placed:
                    up[offset:offset + block.shape[0], column:column + block.shape[1]] = block
                    column += block.shape[1]
                # transposed once here: x @ down and addmm_ with contiguous (in, R) and (R, out) are the fastest
                self._stacked[names] = (down.t().contiguous(), up.t().contiguous(), torch.tensor(owners))
        return self._stacked[names]


class PackedLlama:
    """The packed weights of one loaded Llama; `session(rows, length)` decodes a batch on a static cache."""

    def __init__(self, model, precision: str = "auto", head_precision: str | None = None):
        problem = packing_problem(model, precision)
        if problem:
            raise ValueError(f"cannot pack this model: {problem}")
        config, inner = model.config, model.model
        self.precision = precision
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.embed = inner.embed_tokens.weight.data
        self.rotary = inner.rotary_emb
        self.final_norm = (inner.norm.weight.data, inner.norm.variance_epsilon)
        self.model = model
        self.layers = []
        self._covered: set[int] = set()  # parents of the Linears whose LoRA the sites apply
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv, gate_up = [attn.q_proj, attn.k_proj, attn.v_proj], [mlp.gate_proj, mlp.up_proj]
            self.layers.append(dict(
                attn_norm=(layer.input_layernorm.weight.data, layer.input_layernorm.variance_epsilon),
                mlp_norm=(layer.post_attention_layernorm.weight.data, layer.post_attention_layernorm.variance_epsilon),
                qkv=Projection([_linear(m) for m in qkv], precision), o=Projection([_linear(attn.o_proj)], precision),
                gate_up=Projection([_linear(m) for m in gate_up], precision),
                down=Projection([_linear(mlp.down_proj)], precision),
                lora=dict(qkv=LoRASite([(attn, "q_proj"), (attn, "k_proj"), (attn, "v_proj")]),
                          o=LoRASite([(attn, "o_proj")]), gate_up=LoRASite([(mlp, "gate_proj"), (mlp, "up_proj")]),
                          down=LoRASite([(mlp, "down_proj")])),
            ))
            self._covered |= {id(attn), id(mlp)}
        head_precision = head_precision or ("int8" if precision in ("int4", "auto") else precision)
        self.head = Projection([model.lm_head], head_precision)
        self.head_fp32 = model.lm_head.weight.data

    def logits(self, hidden):
        """The LM head on (rows, hidden). A quantized head's top candidates are scored again with the fp32 head,
        so the tokens greedy search can pick carry exact logits; the rest keep the quantized estimate."""
        logits = self.head(hidden)
        if self.head.kind == "fp32":
            return logits
        top = logits.topk(min(RESCORED, logits.shape[-1]), dim=-1).indices
        exact = torch.einsum("rd,rkd->rk", hidden, self.head_fp32[top])
        return logits.scatter_(1, top, exact)

    def covers(self, names) -> bool:
        """Whether every Linear carrying one of these LoRA runs sits in a packed site (not, say, the LM head)."""
        for parent in self.model.modules():
            for child in parent.children():
                if any(name in getattr(child, "down", {}) for name in names) and id(parent) not in self._covered:
                    return False
        return True

    def session(self, rows: int, length: int, row_adapters: list[str | None]) -> "DecodeSession":
        return DecodeSession(self, rows, length, row_adapters)


def _rms_norm(x, weight_eps):
    weight, eps = weight_eps  # transformers' LlamaRMSNorm, op for op
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class DecodeSession:
    """One batch's static KV cache and LoRA routing; `forward` appends tokens and returns the last position's logits."""

    def __init__(self, packed: PackedLlama, rows: int, length: int, row_adapters: list[str | None]):
        self.packed, self.length, self.filled = packed, length, 0
        shape = (rows, packed.kv_heads, length, packed.head_dim)
        self.keys = [torch.empty(shape) for _ in packed.layers]
        self.values = [torch.empty(shape) for _ in packed.layers]
        positions = torch.arange(length)[None]
        cos, sin = packed.rotary(packed.embed[:1][None], positions)
        self.cos, self.sin = cos[0], sin[0]  # (length, head_dim)
        names = tuple(dict.fromkeys(n for n in row_adapters if n is not None))
        self.lora = []  # per layer: site -> (down, up, mask or None)
        for layer in packed.layers:
            chosen = {}
            for site_name, site in layer["lora"].items():
                stacked = site.stacked(names) if names else None
                if stacked is None:
                    continue
                down, up, owners = stacked
                mask = None
                if any(n != names[0] for n in row_adapters):  # rows differ: each keeps its own run's rank columns
                    row_run = torch.tensor([names.index(n) if n is not None else -1 for n in row_adapters])
                    mask = (row_run[:, None] == owners[None, :]).to(down.dtype)[:, None, :]
                chosen[site_name] = (down, up, mask)
            self.lora.append(chosen)

    def _project(self, x, projection, lora, site):
        out = projection(x)
        if site in lora:
            down, up, mask = lora[site]
            hidden = x @ down
            if mask is not None:
                hidden = hidden * mask
            out.view(-1, out.shape[-1]).addmm_(hidden.view(-1, hidden.shape[-1]), up)  # out is this call's own
        return out

    def forward(self, ids, attention_mask, positions):
        """ids (rows, n) new tokens at `positions` (rows, n); attention_mask (rows, filled + n), 0 on left padding."""
        packed = self.packed
        rows, n = ids.shape
        start, end = self.filled, self.filled + n
        if end > self.length:
            raise ValueError(f"decode session holds {self.length} tokens, asked for {end}")
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # (rows, 1, n, head_dim)
        keep = attention_mask[:, None, None, :end].bool()
        if n > 1:  # prefill: causal, and every position sees itself so padded rows never attend to nothing
            slots = torch.arange(end)
            query_slots = torch.arange(start, end)[:, None]
            keep = (keep & (slots <= query_slots)) | (slots == query_slots)
        x = F.embedding(ids, packed.embed)
        q_heads, heads = packed.heads, packed.heads + 2 * packed.kv_heads
        q_size = q_heads * packed.head_dim
        half = packed.head_dim // 2
        for index, layer in enumerate(packed.layers):
            lora = self.lora[index]
            h = _rms_norm(x, layer["attn_norm"])
            qkv = self._project(h, layer["qkv"], lora, "qkv").view(rows, n, heads, packed.head_dim).transpose(1, 2)
            qk, v = qkv[:, :q_heads + packed.kv_heads], qkv[:, q_heads + packed.kv_heads:]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin  # rotary on q and k at once
            q, k = qk[:, :q_heads], qk[:, q_heads:]
            self.keys[index][:, :, start:end] = k
            self.values[index][:, :, start:end] = v
            attended = F.scaled_dot_product_attention(q, self.keys[index][:, :, :end], self.values[index][:, :, :end],
                                                      attn_mask=keep, enable_gqa=True)
            attended = attended.transpose(1, 2).reshape(rows, n, q_size)
            x = x + self._project(attended, layer["o"], lora, "o")
            h = _rms_norm(x, layer["mlp_norm"])
            gate, up = self._project(h, layer["gate_up"], lora, "gate_up").chunk(2, dim=-1)
            x = x + self._project(F.silu(gate) * up, layer["down"], lora, "down")
        self.filled = end
        last = _rms_norm(x[:, -1], packed.final_norm)
        return packed.logits(last)
