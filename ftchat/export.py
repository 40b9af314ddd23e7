"""Export a run as one merged safetensors model that plain `transformers` loads."""
from __future__ import annotations

import shutil
from pathlib import Path

from ftchat import models, runs


class ExportError(RuntimeError):
    pass


def export_merged(run_dir: str | Path, target: str | Path) -> Path:
    run = runs.load_run(run_dir)
    if run.state != "done":
        raise ExportError(f"{run_dir} is not a finished run (state: {run.state}).")
    target = Path(target)
    weights = runs.weights_dir(run_dir)
    try:
        models.require_safetensors(weights)
    except models.ModelError as exc:
        raise ExportError(str(exc)) from None
    if weights.name == "model":  # full / layer-wise runs already are whole models
        shutil.copytree(weights, target, dirs_exist_ok=True)
        return target
    from peft import PeftConfig, PeftModel

    if PeftConfig.from_pretrained(weights).peft_type != "LORA":
        raise ExportError("Prompt-tuning adapters add virtual tokens and cannot be merged into the weights; "
                          "load the adapter folder with peft instead.")
    base = run.config.get("base")
    model = models.load_model(base, precision="fp32")  # merge into full-precision weights, never into 4-bit ones
    merged = PeftModel.from_pretrained(model, weights).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    if (weights / "tokenizer_config.json").exists():  # the run saved the tokenizer it trained with
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(weights, trust_remote_code=False).save_pretrained(target)
    else:
        models.load_tokenizer(base).save_pretrained(target)
    return target
