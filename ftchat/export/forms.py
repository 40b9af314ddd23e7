"""Export a finished run in the forms other tools read: a merged safetensors model, a GGUF file (llama.cpp),
an Ollama folder, or the plain PEFT adapter - each with a model card."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ftchat import models, runs
from ftchat.export.check import CheckPrompts, GGUFCheck, check_gguf
from ftchat.export.gguf import GGUFExportError, write_gguf
from ftchat.export.modelcard import WinRates, model_card, rounds_of


class ExportError(RuntimeError):
    pass


@dataclass
class Exported:
    path: Path
    check: GGUFCheck | None = None  # llama.cpp's answers beside the in-app model's, for the forms that write a GGUF


def _finished(run_dir: str | Path) -> runs.RunInfo:
    run = runs.load_run(run_dir)
    if run.state != "done":
        raise ExportError(f"{run_dir} is not a finished run (state: {run.state}).")
    return run


def _write_card(run: runs.RunInfo, target: Path, form: str, win_rates: WinRates | None,
                check: GGUFCheck | None = None, card: Path | None = None) -> None:
    (card or target / "README.md").write_text(model_card(run, rounds_of(run.path), form, win_rates, check),
                                              encoding="utf-8")


def gguf_card(target: str | Path) -> Path:
    """The model card a GGUF file export writes beside the file: NAME.gguf -> NAME.md (any other name gets .md)."""
    target = Path(target)
    return target.with_suffix(".md") if target.suffix.lower() == ".gguf" else target.with_name(target.name + ".md")


def export_merged(run_dir: str | Path, target: str | Path, win_rates: WinRates | None = None) -> Path:
    """A folder plain `transformers` loads: the adapter merged into full-precision weights, tokenizer, model card."""
    run = _finished(run_dir)
    target = Path(target)
    weights = runs.weights_dir(run_dir)
    try:
        models.require_safetensors(weights)
    except models.ModelError as exc:
        raise ExportError(str(exc)) from None
    if weights.name == "model":  # full / layer-wise runs already are whole models
        shutil.copytree(weights, target, dirs_exist_ok=True)
        _write_card(run, target, "merged", win_rates)
        return target
    from peft import PeftConfig, PeftModel

    if PeftConfig.from_pretrained(weights).peft_type != "LORA":
        raise ExportError("Prompt-tuning adapters add virtual tokens and cannot be merged into the weights; "
                          "export the adapter (--adapter) and load it with peft instead.")
    base = run.config.get("base")
    model = models.load_model(base, precision="fp32")  # merge into full-precision weights, never into 4-bit ones
    try:
        merged = PeftModel.from_pretrained(model, weights).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:  # torch lists every mismatched tensor: name the first
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc).strip())
        raise ExportError(f"{weights}: the adapter does not fit its base {base} ({first[:300]}); its "
                          "adapter_config.json or weights were changed since training, or the base was.") from None
    merged.save_pretrained(target, safe_serialization=True)
    if (weights / "tokenizer_config.json").exists():  # the run saved the tokenizer it trained with
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(weights, trust_remote_code=False).save_pretrained(target)
    else:
        models.load_tokenizer(base).save_pretrained(target)
    _write_card(run, target, "merged", win_rates)
    return target


def _license(run: runs.RunInfo) -> str | None:
    spec = models.spec_for(str(run.config.get("base") or models.DEFAULT_BASE))
    return spec.license if spec else None


def export_gguf(run_dir: str | Path, target: str | Path, quant: str = "f16", win_rates: WinRates | None = None,
                check: bool = True, prompts: CheckPrompts | None = None) -> Exported:
    """One GGUF file (weights, tokenizer, chat template) for llama.cpp and Ollama, merged from the run, and its model
    card beside it (gguf_card); with `check`, llama.cpp answers `prompts` (default: general ones) beside the in-app
    model first (ftchat.export.check)."""
    run = _finished(run_dir)
    with tempfile.TemporaryDirectory(prefix="ftchat-merge-") as scratch:
        merged = export_merged(run_dir, Path(scratch) / "merged", win_rates)
        written = _gguf_from_merged(run, merged, Path(target), quant)
    checked = check_gguf(run_dir, written, quant, prompts) if check else None
    _write_card(run, written.parent, "gguf", win_rates, checked, card=gguf_card(written))
    return Exported(written, checked)


def _gguf_from_merged(run: runs.RunInfo, merged: Path, target: Path, quant: str) -> Path:
    try:
        return write_gguf(merged, target, quant, name=run.name, license=_license(run))
    except GGUFExportError as exc:
        raise ExportError(str(exc)) from exc


def ollama_template(tokenizer) -> tuple[str, str | None]:
    """The Go template Ollama renders for a ChatML chat template, and the default system prompt the template
    inserts when a conversation has none (SmolLM2 does), or None."""
    if "<|im_start|>" not in (tokenizer.chat_template or ""):
        raise ExportError("Only ChatML chat templates (<|im_start|>role ... <|im_end|>) are translated to an Ollama "
                          "TEMPLATE; write the Modelfile's TEMPLATE by hand for this model.")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "PING"}], tokenize=False,
                                             add_generation_prompt=True)
    default_system = None
    head = "<|im_start|>system\n"
    if rendered.startswith(head):
        default_system = rendered[len(head):rendered.index("<|im_end|>")]
    # every message in its place, as the ChatML template renders it (an empty or a later system turn too); Ollama puts
    # the Modelfile's SYSTEM first when a conversation has no system turn, as the template's default does
    template = ('{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
                '<|im_start|>assistant\n')
    return template, default_system


def modelfile(gguf_name: str, template: str, system: str | None, stops: list[str]) -> str:
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""', ""]
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += ["PARAMETER temperature 0.2", "PARAMETER repeat_penalty 1.1", ""]
    return "\n".join(lines)


def export_ollama(run_dir: str | Path, target: str | Path, quant: str = "q8_0", win_rates: WinRates | None = None,
                  check: bool = True, prompts: CheckPrompts | None = None) -> Exported:
    """A folder for `ollama create NAME -f Modelfile`: model.gguf, a Modelfile with the chat template and stop
    tokens, and the model card; with `check`, llama.cpp answers from model.gguf beside the in-app model first."""
    from transformers import AutoTokenizer

    run = _finished(run_dir)
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="ftchat-merge-") as scratch:
        merged = export_merged(run_dir, Path(scratch) / "merged", win_rates)
        tokenizer = AutoTokenizer.from_pretrained(merged, trust_remote_code=False)
        template, system = ollama_template(tokenizer)  # before the slow GGUF write: a template we cannot translate
        target.mkdir(parents=True, exist_ok=True)
        _gguf_from_merged(run, merged, target / "model.gguf", quant)
    stops = list(dict.fromkeys(t for t in ("<|im_end|>", "<|im_start|>", tokenizer.eos_token) if t))
    (target / "Modelfile").write_text(modelfile("model.gguf", template, system, stops), encoding="utf-8")
    checked = check_gguf(run_dir, target / "model.gguf", quant, prompts) if check else None
    _write_card(run, target, "ollama", win_rates, checked)
    return Exported(target, checked)


def export_adapter(run_dir: str | Path, target: str | Path, win_rates: WinRates | None = None) -> Path:
    """The plain PEFT adapter folder (adapter_config.json, safetensors, tokenizer) with a model card."""
    run = _finished(run_dir)
    weights = runs.weights_dir(run_dir)
    if weights.name != "adapter":
        raise ExportError(f"{run_dir} is a {run.config.get('adapter')} run: it has no adapter; use --merged.")
    try:
        models.require_safetensors(weights)  # else the copy below would leave the pickle out and hold no weights
    except models.ModelError as exc:
        raise ExportError(str(exc)) from None
    target = Path(target)
    shutil.copytree(weights, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*(f"*{suffix}" for suffix in models.PICKLE_SUFFIXES)))
    _write_card(run, target, "adapter", win_rates)
    return target


def push(folder: str | Path, repo: str, private: bool = True) -> str:
    """Upload an exported folder to the Hugging Face Hub; a clear error where the hub cannot be reached."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="Upload from ftchat")
    except Exception as exc:  # offline, no token, no rights: the user sees one sentence and keeps the folder
        raise ExportError(
            f"Could not push {folder} to the Hugging Face Hub repo '{repo}' ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}). The export is complete in {folder}; "
            "check the network and log in with `hf auth login`, then push again, or upload the folder by hand."
        ) from exc
    return str(getattr(info, "commit_url", repo))


FORMS = {  # form -> (label, default quant or None)
    "merged": ("merged model + model card (transformers)", None),
    "gguf": ("GGUF file (llama.cpp)", "f16"),
    "ollama": ("Ollama folder (model.gguf + Modelfile)", "q8_0"),
    "adapter": ("PEFT adapter + model card", None),
}


def default_target(exports_dir: str | Path, run_name: str, form: str, quant: str | None = None) -> Path:
    """Where the app writes an export: EXPORTS/RUN-FORM[-QUANT][.gguf], with -2, -3 … when an earlier export is
    there (an export never writes over another)."""
    quant = quant or FORMS[form][1]
    stem = f"{run_name}-{form}" + (f"-{quant}" if form in ("gguf", "ollama") else "")
    suffix = ".gguf" if form == "gguf" else ""
    candidate, n = Path(exports_dir) / (stem + suffix), 2
    while candidate.exists() or (form == "gguf" and gguf_card(candidate).exists()):
        candidate, n = Path(exports_dir) / f"{stem}-{n}{suffix}", n + 1
    return candidate


def check_target(run_dir: str | Path, form: str, target: str | Path, overwrite: bool = False) -> Path:
    """The target, if writing `form` there destroys nothing; else ExportError. Never inside the run being exported;
    never a file where a folder goes (or a folder where the GGUF file goes); an existing file or a folder with
    files in it only with `overwrite`, and so for the card a GGUF file export writes beside it. Checked before any
    model is loaded."""
    target = Path(target)
    run = Path(run_dir).resolve()
    where = target.resolve()
    if where == run or run in where.parents:
        raise ExportError(f"{target}: that is inside the run {run.name} being exported; export to a path outside "
                          "its folder.")
    if form == "gguf" and not overwrite and gguf_card(target).exists():
        raise ExportError(f"{gguf_card(target)}: already exists (the model card a GGUF export writes beside "
                          f"{target.name}); give a new file name, or add --force to write over it.")
    if not target.exists():
        return target
    writes_file = form == "gguf"
    if writes_file and target.is_dir():
        raise ExportError(f"{target}: is a folder; --gguf writes one file, give a file name such as "
                          f"{target / (run.name + '.gguf')}.")
    if not writes_file and not target.is_dir():
        raise ExportError(f"{target}: is a file; --{form} writes a folder, give a new folder's name.")
    if not overwrite and (writes_file or any(target.iterdir())):
        raise ExportError(f"{target}: already exists{'' if writes_file else ' and holds files'}; give a new "
                          f"{'file' if writes_file else 'folder'}, or add --force to write over it.")
    return target


def export_run(run_dir: str | Path, form: str, target: str | Path, quant: str | None = None,
               win_rates: WinRates | None = None, overwrite: bool = False, check: bool = True,
               prompts: CheckPrompts | None = None) -> Exported:
    """One export by form name, as the CLI flags and the app's Export panel ask for it; an existing target is
    written over only with `overwrite` (check_target). A GGUF (gguf, ollama) is checked in llama.cpp on `prompts`
    unless not `check`."""
    if form not in FORMS:
        raise ExportError(f"Unknown export form '{form}'; choose one of {', '.join(FORMS)}.")
    check_target(run_dir, form, target, overwrite)
    quant = quant or FORMS[form][1]
    if form == "merged":
        return Exported(export_merged(run_dir, target, win_rates))
    if form == "adapter":
        return Exported(export_adapter(run_dir, target, win_rates))
    if form == "gguf":
        return export_gguf(run_dir, target, quant, win_rates, check, prompts)
    return export_ollama(run_dir, target, quant, win_rates, check, prompts)
