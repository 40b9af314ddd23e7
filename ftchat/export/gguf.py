"""Write a merged Llama-architecture model folder as one GGUF file that llama.cpp, Ollama and transformers read.

Mirrors what llama.cpp's convert_hf_to_gguf.py writes for `LlamaForCausalLM` (the bundled SmolLM2 GGUF is the
reference): llama.* hyperparameters, blk.N.* tensor names, Q/K rows permuted to llama.cpp's rotary layout, the
GPT-2 BPE vocabulary with token types and merges, special token ids and the chat template.
"""
from __future__ import annotations

import json
from pathlib import Path

QUANTS = ("f16", "q8_0", "q4_0")


class GGUFExportError(RuntimeError):
    pass


def _permute(weights, n_head: int, n_head_kv: int | None = None):
    """HF's rotary layout (halves) to llama.cpp's (interleaved pairs), as convert_hf_to_gguf.LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensor_type(name: str, data, quant: str):
    """The GGML type of one tensor: 1-D tensors (norms) stay f32, like llama.cpp does; q4_0 keeps the embeddings
    at q8_0 (llama.cpp's quantizer keeps them higher too: a 4-bit embedding costs the most quality)."""
    import gguf

    if data.ndim == 1:
        return gguf.GGMLQuantizationType.F32
    if quant == "f16":
        return gguf.GGMLQuantizationType.F16
    wanted = gguf.GGMLQuantizationType.Q8_0
    if quant == "q4_0" and name not in ("token_embd.weight", "output.weight"):
        wanted = gguf.GGMLQuantizationType.Q4_0
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    if data.shape[-1] % block:  # rows that do not fill whole blocks cannot be quantized: keep them at f16
        return gguf.GGMLQuantizationType.F16
    return wanted


def _vocab(folder: Path, n_vocab: int):
    """Tokens, token types, merges and special ids of a GPT-2 style byte-level BPE tokenizer, padded to the
    embedding's `n_vocab` rows (llama.cpp wants one token per row)."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    try:
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    except (OSError, KeyError, ValueError) as exc:
        raise GGUFExportError(f"{folder}: no readable tokenizer.json ({exc}); GGUF export needs a fast tokenizer.")
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise GGUFExportError(f"{folder}: the tokenizer is {model.get('type')}, not byte-level BPE; "
                              "use llama.cpp's convert_hf_to_gguf.py on the merged folder instead.")
    vocab = tokenizer.get_vocab()
    reverse = {index: token for token, index in vocab.items()}
    added = tokenizer.added_tokens_decoder
    size = max(len(tokenizer), max(reverse) + 1, n_vocab)
    tokens, types = [], []
    for index in range(size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(reverse[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[index])
            types.append(gguf.TokenType.NORMAL)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=size)
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    # llama.cpp adds a BOS token to BPE vocabularies unless told not to; the HF tokenizer is the authority
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
    special.add_special_token.setdefault("bos", adds_bos)
    return tokens, types, special


def _pre_tokenizer(tokens: list[str]) -> str:
    """llama.cpp picks its pre-tokenizer regex by name. SmolLM2's vocabulary (the bundled GGUF says 'smollm')
    is recognised by its first tokens; any other vocabulary gets 'default'."""
    smollm_head = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>"]
    return "smollm" if tokens[:5] == smollm_head else "default"


def write_gguf(model_dir: str | Path, target: str | Path, quant: str = "f16", name: str | None = None,
               license: str | None = None) -> Path:
    """Write `model_dir` (a merged LlamaForCausalLM safetensors folder with its tokenizer) to `target`."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    if quant not in QUANTS:
        raise GGUFExportError(f"--quant: '{quant}' is not one of {', '.join(QUANTS)}.")
    folder, target = Path(model_dir), Path(target)
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    if architectures != ["LlamaForCausalLM"]:
        raise GGUFExportError(
            f"{folder}: ftchat writes GGUF for LlamaForCausalLM models (SmolLM2, Llama), not {architectures}; "
            "run llama.cpp's convert_hf_to_gguf.py on the merged folder instead.")
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default" or scaling.get("rope_type", scaling.get("type", "default")) not in (
            "default", None):
        raise GGUFExportError(f"{folder}: rope scaling {rope or scaling} is not written by ftchat's GGUF export.")
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    n_layers = config["num_hidden_layers"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    tokens, types, special = _vocab(folder, int(config.get("vocab_size") or 0))

    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(partial, "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or folder.name)
    if license:
        writer.add_license(license)
    writer.add_block_count(n_layers)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_file_type(file_type)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokens))
    writer.add_add_space_prefix(False)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special.add_to_gguf(writer, quiet=True)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"{folder}: no .safetensors weights.")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for hf_name in handle.keys():
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue
                new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise GGUFExportError(f"{file}: tensor {hf_name} has no GGUF name for the llama architecture.")
                data = handle.get_tensor(hf_name).float().numpy()
                if hf_name.endswith("q_proj.weight"):
                    data = _permute(data, n_head, n_head)
                elif hf_name.endswith("k_proj.weight"):
                    data = _permute(data, n_head, n_kv)
                qtype = _tensor_type(new_name, data, quant)
                if qtype == gguf.GGMLQuantizationType.F32:
                    writer.add_tensor(new_name, data.astype(np.float32))
                elif qtype == gguf.GGMLQuantizationType.F16:
                    writer.add_tensor(new_name, data.astype(np.float16))
                else:
                    writer.add_tensor(new_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    return finish(writer, partial, target)


def finish(writer, partial: Path, target: Path) -> Path:
    """Write out a GGUFWriter that was filled at `partial`, then move it to `target` (never a half-written target)."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(target)
    return target
