"""Attention for padding-free batches: each example of a packed row attends within itself, and only there.

transformers turns a padding-free row (examples laid end to end, position_ids restarting at 0) into one block-diagonal
mask over the whole row, and torch's SDPA kernels on a CPU compute every block of it: four 486-token examples cost
the attention of one 1944-token sequence, four times the work and half of a training step (bench/profile_step.py).
`packed_sdpa` runs SDPA on each example with `is_causal` instead; any other call (a padded batch, a cache, a row with
no restart) goes to transformers' SDPA unchanged, with the same mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "ftchat_packed_sdpa"


def examples(position_ids: torch.Tensor) -> list[tuple[int, int]] | None:
    """The [start, end) spans of the examples in one padding-free row; None for a row that is one example."""
    positions = position_ids[0]
    starts = ((positions[1:] != positions[:-1] + 1).nonzero().squeeze(1) + 1).tolist()
    if not starts:
        return None
    bounds = [0, *starts, positions.numel()]
    return list(zip(bounds, bounds[1:]))


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                is_causal: bool | None = None, **kwargs):
    position_ids = kwargs.get("position_ids")
    spans = None
    # only plain causal attention: a sliding window, attention sinks, a soft cap or a position bias need the mask
    plain = not any(kwargs.get(k) is not None for k in ("sliding_window", "s_aux", "softcap", "position_bias"))
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if (plain and causal and position_ids is not None and position_ids.dim() == 2 and query.shape[0] == 1
            and position_ids.shape[0] == 1 and position_ids.shape[1] == query.shape[2] == key.shape[2]):
        spans = examples(position_ids)
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    out = torch.cat([F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                                                    dropout_p=dropout, scale=scaling, is_causal=True,
                                                    enable_gqa=groups > 1)
                     for a, b in spans], dim=2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, packed_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the calls that fall back get exactly SDPA's mask


def use_packed_attention(model) -> bool:
    """Switch `model` (a transformers model, or a peft model around one) to packed_sdpa where it runs SDPA now."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner.config, "_attn_implementation", None) != "sdpa":
        return False
    inner.set_attn_implementation(NAME)
    return True
