"""Training on a tiny random Llama: every technique and method learns, and what it saves reloads with plain
transformers / peft."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from trained_runs import SFT_RUN, copy_run, train_tiny
from transformers import AutoModelForCausalLM

from ftchat import runs
from ftchat.config import ConfigError, RunConfig
from ftchat.train.run import run_training


DEFAULTS = dict(max_steps=8, eval_steps=4, batch_size=4, compare_prompts=1, early_stopping=0,
                eval_split=0.1,  # the plan holds none out of 8
                replay=0)  # learning is measured on the user's rows alone; replay has its own test


def train(tmp_path, data, base, name="run", **overrides):
    values = dict(data=[str(data)], out=str(tmp_path / "runs" / name), base=str(base), **DEFAULTS)
    values.update(overrides)
    status = train_tiny(**values)  # it finishes, and SIGTERM means cancel only while it trains
    return tmp_path / "runs" / name, status["summary"]


def trained_or_shared(tmp_path, chats_file, base, sft_run, adapter, lr):
    """train(tmp_path, chats_file, base, adapter=adapter, lr=lr), or conftest's sft_run where it was trained so."""
    if SFT_RUN == {**DEFAULTS, "adapter": adapter, "lr": lr}:
        status = runs.read_status(sft_run)
        assert status["state"] == "done"
        return sft_run, status["summary"]
    return train(tmp_path, chats_file, base, adapter=adapter, lr=lr)


@pytest.mark.parametrize("adapter,lr", [("qlora", 1e-2), ("lora", 1e-2), ("prompt", 1e-1)])
def test_sft_adapters_learn_and_reload_with_peft(tmp_path, tiny_model_dir, chats_file, sft_run, adapter, lr):
    run_dir, summary = trained_or_shared(tmp_path, chats_file, tiny_model_dir, sft_run, adapter, lr)
    assert summary["final_loss"] < summary["first_loss"] - 0.05
    adapter_dir = run_dir / "adapter"
    assert (adapter_dir / "adapter_model.safetensors").exists()
    assert not list(adapter_dir.glob("*.bin")), "no pickles in the result"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = PeftModel.from_pretrained(base, adapter_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        tuned_logits = tuned(input_ids=ids).logits
        with tuned.disable_adapter():
            base_logits = tuned(input_ids=ids).logits
    tuned_logits = tuned_logits[:, -ids.shape[1]:]  # prompt tuning prepends its virtual tokens
    assert not torch.allclose(tuned_logits, base_logits), "the adapter changes the model's output"


@pytest.mark.parametrize("adapter", ["full", "layers"])
def test_full_and_layerwise_save_a_plain_model(tmp_path, tiny_model_dir, chats_file, adapter):
    run_dir, summary = train(tmp_path, chats_file, tiny_model_dir, adapter=adapter, lr=3e-3, train_layers=1)
    assert summary["final_loss"] < summary["first_loss"]
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(run_dir / "model" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))}
    assert any(k.startswith("model.layers.1.") for k in changed)
    if adapter == "layers":  # only the last block (and the final norm) may move
        assert not any(k.startswith(("model.layers.0.", "model.embed_tokens")) for k in changed), changed
    else:
        assert any(k.startswith("model.layers.0.") for k in changed)
    AutoModelForCausalLM.from_pretrained(run_dir / "model")  # plain transformers loads it


def test_dpo_prefers_chosen_over_rejected(tmp_path, tiny_model_dir, preference_file):
    run_dir, summary = train(tmp_path, preference_file, tiny_model_dir, method="dpo", adapter="lora", lr=1e-2)
    assert summary["final_loss"] < summary["first_loss"]  # DPO starts at log(2) and falls as margins grow
    metrics = runs.read_metrics(run_dir)
    margins = [m["rewards_margins"] for m in metrics if "rewards_margins" in m]
    assert margins and margins[-1] > 0
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run_dir / "adapter")


def test_kto_on_thumbs(tmp_path, tiny_model_dir, kto_file):
    run_dir, summary = train(tmp_path, kto_file, tiny_model_dir, method="kto", adapter="qlora", lr=1e-2)
    assert summary["final_loss"] < summary["first_loss"]
    assert (run_dir / "adapter" / "adapter_config.json").exists()


def test_run_folder_records_everything(tiny_model_dir, sft_run):
    run_dir, chats_file = sft_run, sft_run.parent.parent / "chats.jsonl"  # train(..., adapter="lora", lr=1e-2)
    assert SFT_RUN == {**DEFAULTS, "adapter": "lora", "lr": 1e-2}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["base"] == str(tiny_model_dir) and config["lr"] == 1e-2
    assert config["data_hashes"][str(chats_file)] and len(config["data_hashes"][str(chats_file)]) == 64
    RunConfig.from_dict(config).validate()  # the resolved config can be run again as it is
    metrics = runs.read_metrics(run_dir)
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 9))
    assert any("eval_loss" in m for m in metrics)
    for row in metrics:
        assert {"step", "elapsed_s", "max_steps"} <= row.keys()
    assert all("eta_s" in m and "learning_rate" in m for m in metrics if "loss" in m)
    assert any("tokens_per_s" in m for m in metrics)
    status = runs.read_status(run_dir)
    assert status["state"] == "done" and status["summary"]["eval_examples"] == 1
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert [c["kind"] for c in comparison] == ["held-out", "general"]
    assert all(isinstance(c["base"], str) and isinstance(c["tuned"], str) for c in comparison)


def test_child_run_continues_the_parent_adapter(tmp_path, tiny_model_dir, preference_file, sft_run):
    parent_dir = sft_run  # train(tmp_path, chats_file, tiny_model_dir, name="parent", adapter="lora", lr=1e-2)
    assert SFT_RUN == {**DEFAULTS, "adapter": "lora", "lr": 1e-2}
    child_dir, _ = train(tmp_path, preference_file, "smollm2-135m", name="child", method="dpo", adapter="lora",
                         lr=1e-2, parent=str(parent_dir), max_steps=2)
    config = yaml.safe_load((child_dir / "config.yaml").read_text())
    assert config["parent"] == str(parent_dir)
    assert config["base"] == str(tiny_model_dir), "a child trains on its parent's base"
    assert (child_dir / "parent").read_text().strip() == str(parent_dir)
    parent_w = load_file(parent_dir / "adapter" / "adapter_model.safetensors")
    child_w = load_file(child_dir / "adapter" / "adapter_model.safetensors")
    assert parent_w.keys() == child_w.keys()
    assert any(not torch.equal(parent_w[k], child_w[k]) for k in parent_w)


def test_bad_config_and_data_fail_clearly(tmp_path, tiny_model_dir, chats_file, preference_file):
    with pytest.raises(ConfigError, match="adapter"):
        RunConfig(data=[str(chats_file)], out=str(tmp_path / "x"), adapter="magic").validate()
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig(data=[str(tmp_path / "missing.jsonl")], out=str(tmp_path / "x")).validate()
    from ftchat.data import DataError

    out = tmp_path / "runs" / "wrong-shape"
    with pytest.raises(DataError, match="dpo trains on preference"):
        run_training(RunConfig(data=[str(chats_file)], out=str(out), base=str(tiny_model_dir), method="dpo"))
    status = runs.read_status(out)
    assert status["state"] == "failed" and "preference" in status["error"]


def test_finished_run_is_not_overwritten(tmp_path, tiny_model_dir, chats_file, sft_run):
    run_dir = copy_run(sft_run, tmp_path / "runs" / "run")  # a finished LoRA run
    before = (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run_training(RunConfig(data=[str(chats_file)], out=str(run_dir), base=str(tiny_model_dir)))
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == before
    assert runs.read_status(run_dir)["state"] == "done"


def test_a_base_with_no_replay_answers_trains_on_the_users_rows_alone(tmp_path, tiny_model_dir):
    """A random model may answer every general prompt with nothing: replay then adds no rows (it used to fail
    building an empty table of replay rows)."""
    from conftest import FACT_CHATS, write_jsonl

    from ftchat.train import replay

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    cache = replay._cache_path(str(base), 96)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("")  # the base's answers, generated: none
    chats = write_jsonl(tmp_path / "five.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACT_CHATS[:5]])
    run_dir, summary = train(tmp_path, chats, base, max_steps=2, compare_prompts=0, replay=0.2, eval_split=0)
    assert runs.read_status(run_dir)["state"] == "done"
    assert summary["examples"] == 5 and summary.get("replay_examples", 0) == 0, summary


def test_five_examples_are_enough_to_train(tmp_path, tiny_model_dir):
    from conftest import FACT_CHATS, write_jsonl

    five = write_jsonl(tmp_path / "five.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACT_CHATS[:5]])
    run_dir, summary = train(tmp_path, five, tiny_model_dir, lr=1e-2, max_steps=0, epochs=2, compare_prompts=0,
                             replay=0.2)
    assert summary["eval_examples"] == 1 and summary["examples"] == 5  # 4 of the user's rows + 1 replay row
    assert summary["steps"] >= 2


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def test_matmuls_run_in_bf16_where_the_cpu_has_it_and_in_fp32_when_asked(tmp_path, tiny_model_dir, chats_file,
                                                                         sft_run):
    native = bool({"avx512_bf16", "amx_bf16"} & _cpu_flags()) or os.environ.get("FTCHAT_COMPUTE_DTYPE") == "bf16"
    if os.environ.get("FTCHAT_COMPUTE_DTYPE") == "fp32":
        native = False
    summary = runs.read_status(sft_run)["summary"]
    assert summary["matmul_dtype"] == ("bfloat16" if native else "float32")
    assert summary["plan"].endswith(", bf16 matmuls") == native, summary["plan"]
    _, asked = train(tmp_path, chats_file, tiny_model_dir, adapter="lora", lr=1e-2, max_steps=2, precision="fp32",
                     compare_prompts=0)
    assert asked["matmul_dtype"] == "float32" and "bf16" not in asked["plan"]
