"""The next round: the lineage of runs, how many more ratings a round needs, and a round built from votes that
trains, records its parent and measures itself against the parent (the reference model)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import FACT_CHATS, ROOT, ftchat_main, write_jsonl

from ftchat import methods, runs
from ftchat.config import ConfigError, RunConfig
from ftchat.feedback import FeedbackStore
from ftchat.feedback.rounds import RoundError, lineage_win_rates, min_ratings_needed, next_round_config, round_name
from ftchat.feedback.store import UNUSED
from ftchat.runs import lineage


def fake_run(root, name, parent=None, base="smollm2-135m", state="done", adapter="lora"):
    """A run folder as training leaves it, without the weights."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    RunConfig(data=["x.jsonl"], out=str(run_dir), base=base, method="dpo" if parent else "sft", adapter=adapter,
              parent=str(parent) if parent else None).save(run_dir / "config.yaml")
    runs.write_status(run_dir, state, started=time.time())
    return run_dir


def test_lineage_follows_parents_from_the_base(tmp_path):
    root = tmp_path / "runs"
    sft = fake_run(root, "zumo-sft")
    first = fake_run(root, "zumo-sft-r1-dpo", parent=sft)
    second = fake_run(root, "zumo-sft-r2-kto", parent=first)
    assert lineage(root, "zumo-sft-r2-kto") == ["base:smollm2-135m", "zumo-sft", "zumo-sft-r1-dpo", "zumo-sft-r2-kto"]
    assert lineage(root, str(sft)) == ["base:smollm2-135m", "zumo-sft"]
    # a workspace moved elsewhere: parents recorded as old paths are found by name
    moved = tmp_path / "moved"
    root.rename(moved)
    assert lineage(moved, "zumo-sft-r2-kto")[-3:] == ["zumo-sft", "zumo-sft-r1-dpo", "zumo-sft-r2-kto"]
    assert second.name not in lineage(moved, "zumo-sft")


def test_lineage_shows_each_rounds_win_rate_against_its_parent(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "zumo-sft-r1-dpo", parent=fake_run(root, "zumo-sft"))
    store = FeedbackStore.for_workspace(tmp_path)
    votes_for(store, "zumo-sft", 3)  # the base on the left loses all 3
    for winner in ("a", "b", "tie"):  # the round on the right: a loss, a win, a tie
        store.add_vote([{"role": "user", "content": "q"}], "zumo-sft", "zumo-sft-r1-dpo", "x", "y", winner)
    assert lineage_win_rates(store, root, "zumo-sft-r1-dpo") == [
        {"model": "base:smollm2-135m", "parent": None, "win_rate": None, "votes": 0, "judged": None},
        {"model": "zumo-sft", "parent": "base:smollm2-135m", "win_rate": 1.0, "votes": 3, "judged": None},
        {"model": "zumo-sft-r1-dpo", "parent": "zumo-sft", "win_rate": 0.5, "votes": 3, "judged": None},
    ]


def test_round_names_count_rounds(tmp_path):
    assert round_name("zumo-sft", "dpo", tmp_path) == "zumo-sft-r1-dpo"
    assert round_name("zumo-sft-r1-dpo", "kto", tmp_path) == "zumo-sft-r2-kto"
    assert round_name("base:smollm2-135m", "dpo", tmp_path) == "smollm2-135m-r1-dpo"
    (tmp_path / "zumo-sft-r1-dpo").mkdir()
    assert round_name("zumo-sft", "dpo", tmp_path) == "zumo-sft-r1-dpo-2"


def votes_for(store, run, n, winner="b"):
    for i, (question, answer) in enumerate(FACT_CHATS[:n]):
        store.add_vote([{"role": "user", "content": question}], "base:smollm2-135m", run, "I could not say.",
                       answer, winner)


def test_a_round_with_too_few_ratings_says_how_many_more_it_needs(tmp_path, feedback_db):
    fake_run(tmp_path / "runs", "zumo-sft")
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    votes_for(store, "zumo-sft", 3)
    store.add_vote([{"role": "user", "content": "Hi"}], "base:smollm2-135m", "zumo-sft", "Hi", "Hello", "tie")
    rows = store.ratings(model="zumo-sft")
    assert min_ratings_needed("dpo", rows) == 5  # 8 pairs needed, 3 decisive votes give 3
    assert min_ratings_needed("kto", rows) == 2  # each decisive vote gives a good and a bad row
    with pytest.raises(RoundError, match="need 5 more decisive vote"):
        next_round_config(tmp_path, "zumo-sft", "dpo", feedback_db=feedback_db)
    only_good = [{"kind": "thumb", "thumb": 1, "reply_a": f"Fine {i}.", "conversation": [
        {"role": "user", "content": "q"}], "deleted": False} for i in range(9)]
    assert min_ratings_needed("kto", only_good) == 1  # a bad example is missing
    result = subprocess.run([sys.executable, "-m", "ftchat", "round", "--from", "zumo-sft", "--method", "dpo",
                             "--workspace", str(tmp_path), *(["--feedback-db", feedback_db] if feedback_db else [])],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "need 5 more decisive vote" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "zumo-sft-r1-dpo").exists()


def test_round_config_continues_the_rated_run(tmp_path, feedback_db):
    parent = fake_run(tmp_path / "runs", "zumo-sft", base="smollm2-135m", adapter="qlora")
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    votes_for(store, "zumo-sft", 8)
    votes_for(store, "another-run", 8)  # ratings of other models stay out
    config = next_round_config(tmp_path, "zumo-sft", "dpo", max_steps=5, beta=0.2, feedback_db=feedback_db)
    assert (config.parent, config.method, config.adapter, config.base) == (str(parent), "dpo", "qlora", "smollm2-135m")
    assert config.out == str(tmp_path / "runs" / "zumo-sft-r1-dpo")
    assert (config.max_steps, config.beta) == (5, 0.2)
    measured = next_round_config(tmp_path, "zumo-sft", "dpo", feedback_db=feedback_db)
    assert (measured.beta, measured.sft_weight) == (0.01, 1.0)  # what bench/round_learning.py chose (benchmarks.md)
    assert next_round_config(tmp_path, "zumo-sft", "kto", feedback_db=feedback_db).beta == 0.01
    pairs = [json.loads(line) for line in open(config.data[0])]
    assert len(pairs) == 8 and config.data[0].startswith(str(tmp_path / "feedback-data"))
    assert pairs[0]["chosen"][0]["content"] == FACT_CHATS[0][1]
    with pytest.raises(RoundError, match="data"):
        next_round_config(tmp_path, "zumo-sft", "dpo", data=["other.jsonl"])
    fake_run(tmp_path / "runs", "busy", state="running")
    with pytest.raises(RoundError, match="not a finished run"):
        next_round_config(tmp_path, "busy", "kto")


def test_a_round_remembers_the_ratings_it_was_built_from(tmp_path, feedback_db):
    fake_run(tmp_path / "runs", "zumo-sft")
    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    votes_for(store, "zumo-sft", 8)
    tie = store.add_vote([{"role": "user", "content": "Hi"}], "base:smollm2-135m", "zumo-sft", "Hi", "Hello", "tie")
    other = store.add_vote([{"role": "user", "content": "Yo"}], "base:smollm2-135m", "another-run", "a", "b", "a")
    with pytest.raises(ConfigError):  # a round that cannot start marks nothing
        next_round_config(tmp_path, "zumo-sft", "dpo", lr="fast", feedback_db=feedback_db)
    assert store.rounds_used() == []
    next_round_config(tmp_path, "zumo-sft", "dpo", feedback_db=feedback_db)
    # the 8 decisive votes made pairs; the tie gave none, and the other run's vote is not about zumo-sft
    assert [r["id"] for r in store.ratings(round="zumo-sft-r1-dpo")] == list(range(1, 9))
    assert [r["id"] for r in store.ratings(round=UNUSED)] == [tie, other]
    later = store.add_vote([{"role": "user", "content": "Again?"}], "zumo-sft", "zumo-sft-r1-dpo", "x", "y", "b")
    assert [r["id"] for r in store.ratings(round=UNUSED)] == [tie, other, later]
    assert store.unused_count() == 3
    store.delete(3)
    assert store.rounds_used() == [("zumo-sft-r1-dpo", 7)]


def tuned_parent(run_dir, base_dir):
    """A finished LoRA run whose adapter is not zero (as after SFT), written the way training leaves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False,
                                      task_type="CAUSAL_LM"))
    model.save_pretrained(runs.adapter_dir(run_dir))
    chats = write_jsonl(run_dir.parent.parent / "chats.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACT_CHATS])
    RunConfig(data=[str(chats)], out=str(run_dir), base=str(base_dir), adapter="lora", lora_r=8,
              lora_alpha=16).save(run_dir / "config.yaml")
    runs.write_status(run_dir, "done", started=time.time())
    return run_dir


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.slow
def test_a_round_from_votes_trains_records_its_parent_and_is_measured_against_it(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import use_adapter

    from ftchat import models
    from ftchat.train.common import build_model
    from ftchat.train.run import load_training_data

    workspace = tmp_path / "workspace"
    parent_dir = tuned_parent(workspace / "runs" / "zumo-sft", tiny_model_dir)
    store = FeedbackStore.for_workspace(workspace)
    votes_for(store, "zumo-sft", 8)

    code, _, err = ftchat_main("round", "--from", "zumo-sft", "--method", "dpo", "--workspace", workspace,
                               "--max-steps", 2, "--batch-size", 4, "--lr", 5e-2, "--compare-prompts", 0,
                               "--eval-split", 0)  # `python -m ftchat round`, called in-process
    assert code == 0, err[-3000:]
    round_dir = workspace / "runs" / "zumo-sft-r1-dpo"
    assert runs.load_run(round_dir).state == "done"
    saved = yaml.safe_load((round_dir / "config.yaml").read_text())
    assert saved["parent"] == str(parent_dir) and saved["method"] == "dpo" and saved["base"] == str(tiny_model_dir)
    assert (round_dir / "parent").read_text().strip() == str(parent_dir)
    assert not (round_dir / "adapter" / "ref").exists(), "the reference copy is not part of the result"
    assert lineage(workspace / "runs", "zumo-sft-r1-dpo") == [f"base:{tiny_model_dir}", "zumo-sft", "zumo-sft-r1-dpo"]
    # at the first step the policy is the parent's adapter unchanged: measured against the parent, no reward yet
    first = runs.read_metrics(round_dir)[0]
    assert first["step"] == 1 and first["rewards_margins"] == 0.0

    # The trainer the round built (same config, same functions as run_training): its reference is the parent.
    config = RunConfig.load(round_dir / "config.yaml")
    tokenizer = models.load_tokenizer(config.base)
    train_ds, eval_ds, _, _, _ = load_training_data(config, tokenizer)
    model, peft_config = build_model(config)
    trainer = methods.get("dpo").trainer_module().build_trainer(config, model, peft_config, tokenizer, train_ds,
                                                                eval_ds, [])
    policy = trainer.accelerator.unwrap_model(trainer.model)
    assert "ref" in policy.peft_config
    assert not any(p.requires_grad for n, p in policy.named_parameters() if ".ref." in n), "the reference is frozen"
    ids = torch.tensor([tokenizer.encode("What colour is the Zumo lamp? The Zumo lamp is teal.")])
    policy.eval()
    with use_adapter(policy, "ref"):
        reference = logits(policy, ids)
    parent_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                             parent_dir / "adapter").eval()
    base_logits = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), ids)
    assert torch.allclose(reference, logits(parent_model, ids), atol=1e-5)
    assert not torch.allclose(reference, base_logits, atol=1e-3), "the parent differs from the base it was tuned from"

    # the round learned: its adapter moved away from the parent's
    from safetensors.torch import load_file

    before = load_file(parent_dir / "adapter" / "adapter_model.safetensors")
    after = load_file(round_dir / "adapter" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
