"""The model card (README.md with Hugging Face metadata) that goes with every export: what the model is, what it
learned from, every setting, and the rounds of feedback that led to it. A pure function of run folders."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import yaml

from ftchat import methods, models
from ftchat.names import base_choice
from ftchat.runs import RunInfo, load_run

if TYPE_CHECKING:
    from ftchat.export.check import GGUFCheck

# (child, parent) -> (win-rate, votes) or None. Names as the ratings store keeps them: a run's folder name, and
# "base:NAME" for the base the first round started from.
WinRates = Callable[[str, str], "tuple[float, int] | None"]

TECHNIQUES = {
    "qlora": "QLoRA (LoRA adapter trained on a 4-bit NF4 base)",
    "lora": "LoRA adapter",
    "full": "full fine-tune",
    "layers": "layer-wise fine-tune (last blocks only)",
    "prompt": "prompt tuning (virtual tokens)",
}
_NOT_SETTINGS = ("data", "out", "data_hashes", "parent")


def _base_model_id(base: str | None) -> str | None:
    """The hub id the card's `base_model` names: the registry's, or the base itself when it looks like one."""
    spec = models.spec_for(str(base or models.DEFAULT_BASE))
    if spec is not None:
        return spec.hub_id
    base = str(base or "")
    if base.count("/") == 1 and not base.startswith((".", "/", "~")):
        return base
    return None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def metadata(run: RunInfo, form: str) -> dict:
    """The YAML front matter. `form` is "merged" (a transformers model), "adapter" (a PEFT folder), "gguf" (one GGUF
    file) or "ollama" (a GGUF with a Modelfile)."""
    config = run.config
    base = config.get("base")
    spec = models.spec_for(str(base or models.DEFAULT_BASE))
    tags = ["ftchat", "trl", config.get("method", "sft"), config.get("adapter", "qlora")]
    if config.get("adapter") in ("qlora", "lora"):
        tags.append("lora")
    if form in ("gguf", "ollama"):
        tags.append("gguf")
    meta = {"library_name": "peft" if form == "adapter" else "transformers"} if form in ("adapter", "merged") else {}
    meta.update({"pipeline_tag": "text-generation", "tags": list(dict.fromkeys(tags))})
    base_id = _base_model_id(base)
    if base_id:
        meta["base_model"] = base_id
    if spec and spec.license:
        meta["license"] = spec.license
    return meta


def rounds_of(run_dir: str | Path) -> list[RunInfo]:
    """The rounds that led to a run, oldest first and the run itself last, following each run's `parent`; stops
    at a parent that is missing or already seen. (Issue 8 adds runs.lineage, which names the same chain.)"""
    chain: list[RunInfo] = []
    seen: set[Path] = set()
    current: str | Path | None = run_dir
    while current:
        path = Path(current)
        if not path.is_dir() and chain:  # a relative path written from another directory: try a sibling run
            path = chain[-1].path.parent / path.name
        path = path.resolve()
        if path in seen or not path.is_dir():
            break
        seen.add(path)
        chain.append(load_run(path))
        current = chain[-1].parent
    return chain[::-1]


def _round_row(index: int, run: RunInfo, parent: str, win_rates: WinRates | None) -> str:
    config, summary = run.config, run.summary
    win = "—"
    if win_rates is not None:
        found = win_rates(run.name, parent)
        if found is not None and found[0] is not None and found[1] > 0:
            win = f"{found[0]:.0%} of {found[1]} votes"
    files = ", ".join(f"`{p.split('/')[-1]}`" for p in config.get("data", [])) or "—"
    return (f"| {index} | {run.name} | {config.get('method', '?')}/{config.get('adapter', '?')} | {files} | "
            f"{_fmt(summary.get('steps'))} | {_fmt(summary.get('final_loss'))} | {_fmt(summary.get('eval_loss'))} | "
            f"{parent} | {win} |")


def model_card(run: RunInfo, chain: list[RunInfo], form: str = "merged", win_rates: WinRates | None = None,
               gguf_check: "GGUFCheck | None" = None) -> str:
    """README.md text for an export of `run`; `chain` is rounds_of(run) (oldest first, `run` last);
    `win_rates(child, parent)` gives each round's win-rate against its parent where ratings exist; `gguf_check`, the
    llama.cpp check of a GGUF export, adds its figures."""
    base_name = base_choice(str(chain[0].config.get("base") or models.DEFAULT_BASE)) if chain else "base"
    config, summary = run.config, run.summary
    method = config.get("method", "sft")
    label = methods.METHODS[method].label if method in methods.METHODS else method
    base = config.get("base") or models.DEFAULT_BASE
    technique = TECHNIQUES.get(config.get("adapter"), config.get("adapter"))
    lines = ["---", yaml.safe_dump(metadata(run, form), sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {run.name}", "",
             f"Fine-tuned from **{models.describe_base(base)}** (`{base}`) with ftchat: {label}, {technique}.", ""]
    if form == "adapter":
        lines += ["This folder is a PEFT adapter; load it on its base:", "", "```python",
                  "from peft import AutoPeftModelForCausalLM",
                  f"model = AutoPeftModelForCausalLM.from_pretrained(\"{run.name}\")", "```", ""]
    elif form == "gguf":
        lines += ["One GGUF file with the adapter merged into the weights, the tokenizer and the chat template: "
                  "llama.cpp loads it (`llama-cli -m FILE.gguf -cnv`).", ""]
    elif form == "ollama":
        lines += ["`model.gguf` (the adapter merged into the weights) and a Modelfile with the chat template: "
                  f"`ollama create {run.name} -f Modelfile` in this folder.", ""]
    else:
        lines += ["The adapter is merged into the weights: plain `transformers` loads this folder.", ""]
    lines += ["## Intended use", "",
              "A small assistant tuned on the data listed below, for the questions that data covers. It inherits the "
              "base model's limits and biases; it was evaluated only by the losses and ratings shown here, so check "
              "its answers before relying on them.", ""]
    lines += ["## Training data", "", "| file | SHA-256 |", "|---|---|"]
    hashes = config.get("data_hashes") or {}
    for path in config.get("data", []):
        lines.append(f"| `{path}` | `{hashes.get(path, 'unknown')}` |")
    lines += ["", "## Results", "", "| steps | first loss | final loss | eval loss (best) | runtime (s) |",
              "|---|---|---|---|---|",
              f"| {_fmt(summary.get('steps'))} | {_fmt(summary.get('first_loss'))} | {_fmt(summary.get('final_loss'))} "
              f"| {_fmt(summary.get('eval_loss'))} | {_fmt(summary.get('runtime_s'))} |", ""]
    if gguf_check is not None:
        lines += [gguf_check.markdown()]
    lines += ["## Rounds", "",
              "Each round continued from the one before it; the win-rate is how often raters preferred the round's "
              "answer to its parent's (— where none were rated).", "",
              "| round | run | method/technique | data | steps | final loss | eval loss | parent | win-rate vs parent |",
              "|---|---|---|---|---|---|---|---|---|"]
    for index, step in enumerate(chain, start=1):
        lines.append(_round_row(index, step, chain[index - 2].name if index > 1 else base_name, win_rates))
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    for key, value in config.items():
        if key not in _NOT_SETTINGS:
            lines.append(f"| {key} | {_fmt(value)} |")
    lines += ["", "Written by ftchat (`python -m ftchat export`)."]
    return "\n".join(lines) + "\n"
