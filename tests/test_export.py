"""Take a tuned model out: GGUF that transformers reads back with the same answers, an Ollama folder, a merged model
and an adapter, each with a model card that names its data, settings and rounds."""
from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

from ftchat.export.forms import ExportError, export_adapter, export_gguf, export_merged, export_ollama, push

PROMPT = [{"role": "user", "content": "What colour is the Zumo lamp?"}]


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _greedy_and_logits(model, tokenizer):
    import torch

    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        logits = model(**ids).logits[0, -1].float()
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return ids["input_ids"][0].tolist(), logits, tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def test_gguf_reads_back_with_the_same_answer_and_logits(two_rounds, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = two_rounds / "runs" / "b"
    merged = export_merged(run, tmp_path / "merged")
    gguf_file = export_gguf(run, tmp_path / "gguf" / "b.f16.gguf", quant="f16", check=False).path
    reference = AutoModelForCausalLM.from_pretrained(merged).eval()
    ref_tok = AutoTokenizer.from_pretrained(merged)
    back = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32).eval()
    back_tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    assert back_tok.chat_template == ref_tok.chat_template, "the chat template travels inside the GGUF"
    ids, logits, answer = _greedy_and_logits(reference, ref_tok)
    back_ids, back_logits, back_answer = _greedy_and_logits(back, back_tok)
    assert back_ids == ids, "the GGUF tokenizer encodes the prompt as the original does"
    assert (back_logits - logits).abs().max().item() < 0.05, "f16 rounding only"
    assert back_answer == answer and answer.strip()


def test_merged_model_card_names_data_settings_and_rounds_with_win_rates(two_rounds, tmp_path):
    run_b, run_a = two_rounds / "runs" / "b", two_rounds / "runs" / "a"
    asked = []

    def win_rates(child, parent):  # as the ratings store answers: names, not paths
        asked.append((child, parent))
        return {"a": (0.5, 2), "b": (0.75, 8)}[child]

    card = (export_merged(run_b, tmp_path / "merged", win_rates) / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and {"ftchat", "sft", "lora"} <= set(meta["tags"])
    bananas = two_rounds / "bananas.jsonl"
    assert hashlib.sha256(bananas.read_bytes()).hexdigest() in card
    rounds = card.split("## Rounds")[1].split("## Settings")[0]
    row_a = next(line for line in rounds.splitlines() if line.startswith("| 1 |"))
    row_b = next(line for line in rounds.splitlines() if line.startswith("| 2 |"))
    base = "base:" + yaml.safe_load((run_a / "config.yaml").read_text())["base"]
    assert "| a |" in row_a and f"| {base} | 50% of 2 votes |" in row_a
    assert "| b |" in row_b and "| a | 75% of 8 votes |" in row_b
    assert asked == [("a", base), ("b", "a")], "each round is compared with its own parent"
    assert "| lora_r | 16 |" in card and "| max_steps | 8 |" in card and "## Intended use" in card


def test_ollama_folder_has_gguf_modelfile_template_and_stops(two_rounds, tmp_path):
    import gguf

    target = export_ollama(two_rounds / "runs" / "a", tmp_path / "ollama", quant="q8_0", check=False).path
    modelfile = (target / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n") and (target / "model.gguf").is_file()
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile, "the template's default system"
    reader = gguf.GGUFReader(target / "model.gguf")
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == 2


def test_adapter_export_has_a_card_and_push_fails_clearly_offline(two_rounds, tmp_path, monkeypatch):
    target = export_adapter(two_rounds / "runs" / "a", tmp_path / "adapter")
    assert (target / "adapter_config.json").is_file() and any(target.glob("*.safetensors"))
    assert _front_matter((target / "README.md").read_text())["library_name"] == "peft"
    assert not list(target.glob("*.bin"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError, match="Could not push .* The export is complete"):
        push(target, "someone/zumo-adapter")


def test_an_unfinished_run_is_refused(tmp_path):
    with pytest.raises(ExportError, match="not a finished run"):
        export_gguf(tmp_path / "nothing", tmp_path / "x.gguf")


def test_the_app_panel_export_lands_in_the_workspace_exports(two_rounds, tmp_path):
    from ftchat.export.forms import default_target, export_run

    target = default_target(tmp_path / "exports", "a", "adapter")
    assert target == tmp_path / "exports" / "a-adapter"
    assert default_target(tmp_path, "a", "gguf").name == "a-gguf-f16.gguf"
    assert (export_run(two_rounds / "runs" / "a", "adapter", target).path / "adapter_config.json").is_file()
    with pytest.raises(ExportError, match="Unknown export form"):
        export_run(two_rounds / "runs" / "a", "onnx", target)


def test_win_rates_come_from_the_workspace_ratings_store(tmp_path):
    from ftchat.feedback import FeedbackStore
    from ftchat.feedback.rounds import store_win_rates

    assert store_win_rates(tmp_path) is None, "no store, no invented win-rates (and no file created)"
    assert not (tmp_path / "feedback.sqlite").exists()
    store = FeedbackStore.for_workspace(tmp_path)
    chat = [{"role": "user", "content": "Which colour is the Vellum kettle?"}]
    for winner in ("a", "a", "a", "b"):
        store.add_vote(chat, "round-2", "round-1", "Ochre.", "Blue.", winner)
    rates = store_win_rates(tmp_path)
    assert rates("round-2", "round-1") == (0.75, 4)
    assert rates("round-1", "base:smollm2-135m") == (None, 0)


CONVERSATIONS = {
    "a system turn and two exchanges": [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What colour is the Zumo lamp?"},
        {"role": "assistant", "content": "The Zumo lamp is teal."},
        {"role": "user", "content": "And who made it?"},
        {"role": "assistant", "content": "Ilse Varga made it in 1987."},
        {"role": "user", "content": "Where does it stand?"}],
    "two exchanges, no system turn": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "A pear."},
        {"role": "user", "content": "Another one?"}],
    "one question": PROMPT,
    "an empty system turn": [{"role": "system", "content": ""}] + PROMPT,
    "a system turn after the first exchange": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "system", "content": "From now on, answer in French."}, {"role": "user", "content": "Name a fruit."}],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_ollama_modelfile_template_renders_the_chat_templates_prompt(bundled_tokenizer, name):
    """The Modelfile's TEMPLATE, rendered as Ollama renders it (tests/go_template.py), gives the prompt the chat
    template gives, string for string: Ollama users meet the model the app trained and showed."""
    import re

    from go_template import ollama_values, render

    from ftchat.export.forms import modelfile, ollama_template

    text = modelfile("model.gguf", *ollama_template(bundled_tokenizer), ["<|im_end|>"])
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)  # as Ollama's parser unquotes it
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    conversation = CONVERSATIONS[name]
    expected = bundled_tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert render(template, ollama_values(conversation, system and system.group(1))) == expected


def test_the_go_template_renderer_follows_go_on_trim_markers_and_branches():
    from go_template import render

    assert render("a  {{- .X -}}  b", {"X": 1}) == "a1b"
    assert render("{{ if .S }}yes{{ else }}no{{ end }}|{{ if not .S }}empty{{ end }}", {"S": ""}) == "no|empty"
    assert render('{{ range .M }}{{ if eq .R "u" "a" }}[{{ .C }}]{{ end }}{{ end }}',
                  {"M": [{"R": "u", "C": 1}, {"R": "s", "C": 2}, {"R": "a", "C": 3}]}) == "[1][3]"
    assert render("{{ range .M }}{{ $.T }}{{ end }}", {"M": [1, 2], "T": "t"}) == "tt"
    with pytest.raises(ValueError, match="outside the subset"):
        render("{{ index .M 0 }}", {"M": [1]})
