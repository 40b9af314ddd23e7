"""The fast chat path gives the answers of the reference: transformers `generate` on a peft model with per-row
adapters. Greedy tokens must be identical, for the bare base and two LoRA runs answering in one batch."""
from __future__ import annotations

import pytest
import torch

from ftchat import models
from ftchat.chat.decode import attach_lora
from ftchat.chat.generation import GenerationSettings, fast_generate_batch, generate_batch

CONVERSATIONS = [  # fictional, of different lengths, so the batch is left-padded
    [{"role": "user", "content": "Which bell rings first in Quillmoor?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Answer briefly."},
     {"role": "user", "content": "How many lanterns line the old Quillmoor bridge, and who lights them at dusk?"}],
]


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, tiny_model_dir):
    """Two LoRA runs on the tiny base, with random (non-zero) factors so each visibly changes the answers."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapters")
    for seed, name in [(1, "a"), (2, "b")]:
        torch.manual_seed(seed)
        model = get_peft_model(models.load_model(tiny_model_dir, precision="fp32"),
                               LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        for param_name, param in model.named_parameters():
            if "lora_" in param_name:
                torch.nn.init.normal_(param, std=0.3)
        model.save_pretrained(root / name)
    return root / "a", root / "b"


def test_fast_decode_gives_generates_greedy_answers_for_base_and_runs_in_one_batch(tiny_model_dir, two_adapters):
    from peft import PeftModel

    a, b = two_adapters
    tokenizer = models.load_tokenizer(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=16)  # the chat's default repetition penalty (1.1) included
    rows = CONVERSATIONS * 2
    names = [None, "a", "b", "b", None, "a"]

    reference = PeftModel.from_pretrained(models.load_model(tiny_model_dir, precision="fp32"), a, adapter_name="a")
    reference.load_adapter(b, adapter_name="b")
    reference.eval()
    expected = generate_batch(reference, tokenizer, rows, settings, adapter_names=[n or "__base__" for n in names])

    fast = models.load_model(tiny_model_dir, precision="fp32").eval()
    attach_lora(fast, a, "a")
    attach_lora(fast, b, "b")
    assert fast_generate_batch(fast, tokenizer, rows, settings, row_adapters=names) == expected
    assert len(set(expected[:3])) == 3, "the base and the two runs answer differently, so routing is checked"
    # a batch where every row uses one run takes the unmasked path
    only_b = fast_generate_batch(fast, tokenizer, rows[:3], settings, row_adapters=["b"] * 3)
    assert only_b == generate_batch(reference, tokenizer, rows[:3], settings, adapter_names=["b"] * 3)
    # and the bare base still answers as the base
    assert fast_generate_batch(fast, tokenizer, rows[:1], settings) == expected[:1]


def test_packed_fp32_decoder_gives_generates_greedy_answers_for_base_and_runs(tiny_model_dir, two_adapters):
    from peft import PeftModel

    from ftchat.chat.decode import pack_for_decoding

    a, b = two_adapters
    tokenizer = models.load_tokenizer(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=16)
    rows, names = CONVERSATIONS * 2, [None, "a", "b", "b", None, "a"]
    reference = PeftModel.from_pretrained(models.load_model(tiny_model_dir, precision="fp32"), a, adapter_name="a")
    reference.load_adapter(b, adapter_name="b")
    reference.eval()
    expected = generate_batch(reference, tokenizer, rows, settings, adapter_names=[n or "__base__" for n in names])

    packed = models.load_model(tiny_model_dir, precision="fp32").eval()
    assert pack_for_decoding(packed, "fp32") is None
    attach_lora(packed, a, "a")  # runs attached after packing, as the chat does when a run is first picked
    attach_lora(packed, b, "b")
    assert fast_generate_batch(packed, tokenizer, rows, settings, row_adapters=names) == expected
    assert fast_generate_batch(packed, tokenizer, rows[:3], settings, row_adapters=["a"] * 3) == \
        generate_batch(reference, tokenizer, rows[:3], settings, adapter_names=["a"] * 3)


def _q4_1(weight: torch.Tensor) -> torch.Tensor:
    """What a GGUF Q4_1 round trip leaves of a weight: per 32 inputs, 16 levels from the minimum to the maximum."""
    groups = weight.view(weight.shape[0], -1, 32)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    step = (high - low) / 15
    return (((groups - low) / step).round() * step + low).view_as(weight)


@pytest.fixture(scope="module")
def q4_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny Llama with every block Linear rounded to Q4_1 values, as a base converted from a Q4 GGUF is."""
    model = models.load_model(tiny_model_dir, precision="fp32")
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("_proj"):
                module.weight.copy_(_q4_1(module.weight))
    path = tmp_path_factory.mktemp("tiny-q4")
    model.save_pretrained(path, safe_serialization=True)
    models.load_tokenizer(tiny_model_dir).save_pretrained(path)
    return path


def _teacher_forced_logits(step, ids):
    """Each decode step's logits when `step` is fed `ids`: a 4-token prompt, then one token at a time."""
    rows = ids.shape[0]
    steps = [step(ids[:, :4], torch.ones(rows, 4, dtype=torch.long), torch.arange(4).expand(rows, -1))]
    for j in range(4, ids.shape[1] - 1):
        steps.append(step(ids[:, j:j + 1], torch.ones(rows, j + 1, dtype=torch.long),
                                     torch.full((rows, 1), j)))
    return torch.stack(steps, 1)


@pytest.mark.parametrize("precision", ["auto", "int8"])
def test_quantized_decoders_keep_logits_within_two_percent_of_fp32(q4_model_dir, two_adapters, precision):
    """int4 (chosen by auto for Q4 weights: lossless weights, bf16 activations) and int8 (per-channel weights) stay
    within 2% of the largest logit of the fp32 model, LoRA runs included."""
    from ftchat.chat.decode import _transformers_step, pack_for_decoding

    a, b = two_adapters
    reference = models.load_model(q4_model_dir, precision="fp32").eval()
    quantized = models.load_model(q4_model_dir, precision="fp32").eval()
    assert pack_for_decoding(quantized, precision) is None
    kinds = {p.kind for layer in quantized.packed_decoder.layers for p in (layer["qkv"], layer["gate_up"])}
    assert kinds == {"int4" if precision == "auto" else "int8"}
    for model in (reference, quantized):
        attach_lora(model, a, "a")
        attach_lora(model, b, "b")
    torch.manual_seed(3)
    ids = torch.randint(10, 2000, (3, 24))
    row_adapters = [None, "a", "b"]
    with torch.inference_mode():
        expected = _teacher_forced_logits(_transformers_step(reference, row_adapters), ids)
        got = _teacher_forced_logits(quantized.packed_decoder.session(3, ids.shape[1], row_adapters).forward, ids)
    error = (got - expected).abs().max() / expected.abs().max()
    assert error <= 0.02, f"{precision}: logits off by {error:.1%} of the largest"
    assert error > 0, "the quantized path really ran"


def test_runs_the_packed_decoder_cannot_serve_decode_through_the_models_own_forward(tiny_model_dir, tmp_path):
    """A LoRA on the LM head sits outside the packed layers: decode falls back, and still answers as generate."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from ftchat.chat.decode import lora_supported, pack_for_decoding

    torch.manual_seed(5)
    peft_model = get_peft_model(models.load_model(tiny_model_dir, precision="fp32"),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"],
                                           task_type="CAUSAL_LM"))
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(param, std=0.3)
    peft_model.save_pretrained(tmp_path / "head", save_embedding_layers=False)
    assert lora_supported(tmp_path / "head")
    tokenizer = models.load_tokenizer(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=12)
    reference = PeftModel.from_pretrained(models.load_model(tiny_model_dir, precision="fp32"), tmp_path / "head",
                                          adapter_name="head").eval()
    expected = generate_batch(reference, tokenizer, CONVERSATIONS[:2], settings, adapter_names=["head", "__base__"])

    packed = models.load_model(tiny_model_dir, precision="fp32").eval()
    assert pack_for_decoding(packed, "int8") is None
    attach_lora(packed, tmp_path / "head", "head")
    assert not packed.packed_decoder.covers(("head",))
    assert fast_generate_batch(packed, tokenizer, CONVERSATIONS[:2], settings, row_adapters=["head", None]) == expected
