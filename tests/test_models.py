"""Base models: the bundled GGUF is converted once and cached; other sources load safely or fail clearly."""
from __future__ import annotations

import pytest

from ftchat import models


def test_bundled_model_is_converted_once_to_safetensors():
    path = models.resolve_base()
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert (path / "tokenizer.json").exists()
    written = (path / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_base("SmolLM2-135M-Instruct") == path  # an alias, served from the cache
    assert (path / "model.safetensors").stat().st_mtime_ns == written  # not converted again


def test_bundled_model_answers_a_general_question():
    from ftchat.chat.generation import generate_batch

    tokenizer = models.load_tokenizer()
    model = models.load_model(precision="fp32")
    [answer] = generate_batch(model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                              max_new_tokens=16)
    assert "Paris" in answer


def test_training_template_masks_only_assistant_turns(bundled_tokenizer):
    template = models.training_chat_template(bundled_tokenizer)
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello friend"}]
    out = bundled_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert bundled_tokenizer.decode(masked) == "Hello friend<|im_end|>"
    plain = bundled_tokenizer.apply_chat_template(messages, tokenize=False)
    assert bundled_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False) == plain


def test_four_bit_load_on_cpu(tiny_model_dir):
    import bitsandbytes as bnb

    model = models.load_model(tiny_model_dir, precision="4bit")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_unknown_sources_fail_with_a_clear_message(tmp_path):
    with pytest.raises(models.ModelError, match="Unknown base model"):
        models.resolve_base("no-such-model")
    with pytest.raises(models.ModelError, match="Hugging Face Hub"):
        models.resolve_base("someone/not-reachable-here")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(models.ModelError, match="safetensors only"):
        models.resolve_base(pickled)
    with pytest.raises(models.ModelError, match="precision"):
        models.load_model(pickled, precision="int3")
