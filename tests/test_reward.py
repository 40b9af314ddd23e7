"""The reward loop on a tiny random Llama: a reward model from preference pairs, GRPO / RLOO against rules and
reward models, the judge between two models, and their commands (`python -m ftchat ...`, called in-process)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import ftchat_main, write_jsonl
from peft import PeftModel
from safetensors.torch import load_file
from trained_runs import copy_run
from transformers import AutoModelForSequenceClassification

from ftchat import runs
from ftchat.train import preflight
from ftchat.config import ConfigError, RunConfig
from ftchat.feedback.judge import judge_win_rate, uncertainty_order
from ftchat.train.run import run_training

# Fictional shop questions; the chosen reply is courteous, the rejected one rude.
QUESTIONS = ["When does the Velmora bakery open?", "Do you sell Quillfern tea?", "Where is the Brantle kiosk?",
             "Can I return a Zopple kettle?", "Is the Marrowind cafe open on Sunday?", "How much is a Tessik lamp?",
             "Do you deliver to Oakhollow?", "Who runs the Pindle market stall?"]
POLITE = "Thank you for asking! I am glad to help, please let me know anything else."
RUDE = "Whatever, go away, that is a stupid question."


def rm_pairs(tmp_path, name="pairs.jsonl"):
    return write_jsonl(tmp_path / name, [{"prompt": q, "chosen": POLITE, "rejected": RUDE} for q in QUESTIONS])


def prompts_file(tmp_path, name="prompts.jsonl"):
    return write_jsonl(tmp_path / name, [{"prompt": q} for q in QUESTIONS[:4]] +
                       [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]}
                        for q in QUESTIONS[4:]])


def train(root, data, base, name, **overrides):
    values = dict(data=[str(data)], out=str(root / "runs" / name), base=str(base), max_steps=4, eval_steps=4,
                  batch_size=4, compare_prompts=0, early_stopping=0, replay=0)
    values.update(overrides)
    status = run_training(RunConfig(**values))
    assert status["state"] == "done", status
    return root / "runs" / name, status["summary"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("reward-loop")


@pytest.fixture(scope="module")
def reward_run(workspace, tiny_model_dir):
    """A reward model that has learned polite over rude (asked for qlora: on a CPU it trains lora)."""
    run_dir, summary = train(workspace, rm_pairs(workspace), tiny_model_dir, "rm", method="reward", adapter="qlora",
                             lr=1e-2, max_steps=12, eval_split=0.25)
    return run_dir, summary


def run(*args):
    code, out, err = ftchat_main(*args)
    assert code == 0, err[-3000:]
    return out


def test_reward_model_ranks_held_out_pairs_and_reloads_with_peft(reward_run, tiny_model_dir):
    run_dir, summary = reward_run
    assert summary["eval_pairs"] == 2
    assert summary["eval_accuracy"] == 1.0 and summary["eval_margin"] > 0  # the two held-out pairs ranked right
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["adapter"] == "lora"
    metrics = runs.read_metrics(run_dir)
    assert any("eval_accuracy" in m for m in metrics) and any("margin" in m for m in metrics)
    assert not (run_dir / "comparison.json").exists(), "a reward model does not chat"
    from ftchat.chat.engine import ChatEngine

    assert str(run_dir) not in [value for _, value in ChatEngine(runs_root=run_dir.parent).choices()]

    adapter = run_dir / "adapter"
    assert any("score" in key for key in load_file(adapter / "adapter_model.safetensors")), "the head is saved"
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    base.config.pad_token_id = 2
    model = PeftModel.from_pretrained(base, adapter).eval()
    from ftchat.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)

    def score(reply):
        ids = tok.apply_chat_template([{"role": "user", "content": "Is the Gellow pier open?"},
                                       {"role": "assistant", "content": reply}], tokenize=True, return_dict=True)
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids["input_ids"]])).logits[0, 0].item()

    assert score(POLITE) > score(RUDE)  # a prompt it never saw


def test_reward_score_from_the_shell(reward_run, tmp_path):
    run_dir, _ = reward_run
    fresh = write_jsonl(tmp_path / "new.jsonl", [
        {"prompt": "Is the Drommel ferry late?", "chosen": POLITE, "rejected": RUDE},
        {"prompt": "Is the Drommel ferry late?", "chosen": RUDE, "rejected": POLITE},  # mislabelled: counts as wrong
    ])
    result = json.loads(run("reward", "score", "--run", str(run_dir), "--data", str(fresh), "--json"))
    assert result["n"] == 2
    assert result["accuracy"] == 0.5
    assert abs(result["margin"]) < 1e-4  # the two pairs are mirror images


def test_grpo_with_a_rule_reward_logs_reward_kl_and_length(tiny_model_dir, tmp_path):
    run_dir, summary = train(tmp_path, prompts_file(tmp_path), tiny_model_dir, "grpo", method="grpo",
                             reward=["rule:short"], num_generations=2, batch_size=2, max_steps=2,
                             max_completion_length=8, lr=1e-2)
    metrics = [m for m in runs.read_metrics(run_dir) if "reward" in m]
    assert len(metrics) == 2
    for m in metrics:
        assert {"kl", "completions_mean_length", "rewards_rule_short_mean"} <= set(m)
        assert 0 <= m["reward"] <= 1  # rule:short lies in [0, 1]
    assert summary["first_reward"] is not None and summary["final_kl"] is not None
    assert (run_dir / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_rloo_from_a_parent_against_a_reward_model_and_a_rule(reward_run, tiny_model_dir, tmp_path, sft_run):
    rm_dir, _ = reward_run
    parent = sft_run  # a finished LoRA SFT run on the tiny base (conftest)
    run_dir, summary = train(tmp_path, prompts_file(tmp_path), tiny_model_dir, "rloo", method="rloo",
                             parent=str(parent), reward=[str(rm_dir), "rule:polite"], reward_weights=[1.0, 0.5],
                             num_generations=2, batch_size=2, max_steps=2, max_completion_length=8)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["parent"] == str(parent) and config["reward"] == [str(rm_dir), "rule:polite"]
    metrics = [m for m in runs.read_metrics(run_dir) if "reward" in m]
    assert metrics and all(f"rewards_rm_{rm_dir.name}_mean" in m and "rewards_rule_polite_mean" in m for m in metrics)
    adapter = run_dir / "adapter"
    assert not (adapter / "ref").exists(), "the frozen reference copy is not part of the result"
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)  # plain peft loads it
    parent_weights = load_file(parent / "adapter" / "adapter_model.safetensors")
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights.keys() == parent_weights.keys()
    assert any(not torch.equal(weights[k], parent_weights[k]) for k in weights), "RLOO moved the parent's adapter"


def test_rl_config_lists_every_reward_problem(tmp_path, reward_run, chats_file):
    prompts = prompts_file(tmp_path)
    with pytest.raises(ConfigError) as error:  # the values, then what the reward specs name (train.preflight)
        preflight.check(RunConfig(data=[str(prompts)], out=str(tmp_path / "x"), method="grpo",
                                  reward=["rule:shiny", str(chats_file)], reward_weights=[1.0], num_generations=3,
                                  batch_size=4))
    message = str(error.value)
    assert "unknown rule 'shiny'" in message and "reward_weights" in message and "num_generations" in message
    assert "not a run folder" in message
    with pytest.raises(ConfigError, match="needs at least one reward"):
        RunConfig(data=[str(prompts)], out=str(tmp_path / "y"), method="rloo").validate()
    with pytest.raises(ConfigError, match="only grpo and rloo"):
        RunConfig(data=[str(chats_file)], out=str(tmp_path / "z"), reward=["rule:short"]).validate()


def test_data_check_recognizes_prompt_only(tmp_path):
    report = json.loads(run("data", "check", str(prompts_file(tmp_path)), "--json"))
    assert report["shape"] == "prompt_only" and report["examples"] == len(QUESTIONS)


def test_judge_win_rate_counts_ties_half_and_brackets_the_rate():
    assert judge_win_rate([2, 2, 2], [1, 1, 1]) == (1.0, 1.0, 1.0)
    rate, low, high = judge_win_rate([1, 0, 5, 5], [0, 1, 5, 5])  # one win, one loss, two ties
    assert rate == 0.5 and low < 0.5 < high
    rate, low, high = judge_win_rate([1.0] * 15 + [0.0] * 5, [0.5] * 20)
    assert rate == 0.75 and low < 0.75 < high and 0.5 < low  # 15 of 20 wins: the interval stays above a coin flip


def test_uncertainty_order_puts_the_closest_pairs_first(reward_run):
    from ftchat.train.reward_model import RewardModel

    rm = RewardModel(reward_run[0])
    prompts = ["Is the Sorrel gate open?", "Where is Fenwick lane?", "Do you sell Arbel jam?"]
    replies_a = [POLITE, "Thank you for asking!", RUDE]
    replies_b = [RUDE, "Thank you for asking!", POLITE]
    ordered = uncertainty_order(prompts, replies_a, replies_b, rm)
    assert ordered[0] == "Where is Fenwick lane?"  # identical replies: margin 0, the least sure
    assert sorted(ordered) == sorted(prompts)


@pytest.mark.slow
def test_judge_from_the_shell_writes_the_judgement(reward_run, tiny_model_dir, tmp_path, sft_run):
    rm_dir, _ = reward_run
    tuned = copy_run(sft_run, tmp_path / "runs" / "tuned")  # a finished LoRA SFT run; the judgement is written in it
    prompt_lines = tmp_path / "prompts.txt"
    prompt_lines.write_text("What is the Quibble bridge made of?\n\nWho paints the Larkfen boats?\n")
    result = json.loads(run("judge", "--run", str(tuned), "--against", f"base:{tiny_model_dir}",
                            "--reward", str(rm_dir), "--prompts", str(prompt_lines), "--max-new-tokens", "6",
                            "--json"))
    assert result["n"] == 2 and result["wins"] + result["ties"] + result["losses"] == 2
    assert result["ci_low"] <= result["win_rate"] <= result["ci_high"]
    assert len(result["rows"]) == 2 and all(r["reply_a"] is not None for r in result["rows"])
    kept = json.loads((tuned / "judge.json").read_text())
    assert kept[f"base:{tiny_model_dir}"]["win_rate"] == result["win_rate"]


def rate(store, run_name, n):
    """n votes where the person preferred the polite reply of `run_name` over the base's rude one."""
    for question in QUESTIONS[:n]:
        store.add_vote([{"role": "user", "content": question}], "base:smollm2-135m", run_name, RUDE, POLITE, "b")


def test_a_reward_rl_round_with_too_few_votes_says_how_many_more(tmp_path):
    from ftchat.feedback import FeedbackStore
    from ftchat.feedback.rounds import RoundError, reward_rl_round

    rate(FeedbackStore.for_workspace(tmp_path), "base:smollm2-135m", 3)
    with pytest.raises(RoundError, match="need 5 more decisive vote"):
        reward_rl_round(tmp_path, "base:smollm2-135m")


def test_a_reward_rl_rounds_samples_run_as_long_as_the_replies_people_preferred(tmp_path, bundled_tokenizer):
    """Seeded fictional replies of 60-140 words, each preferred with a sign-off at its end: the RL run's samples may run
    to the 90th percentile of their length (so a sample can reach the sign-off), rounded up to 16 and at most 256; a
    flag given wins; short replies keep the 48-token floor."""
    import random

    from ftchat.feedback import FeedbackStore
    from ftchat.feedback.rounds import reward_rl_round

    rng = random.Random(83)
    words = ["Trevane", "valve", "gasket", "turn", "the", "knob", "gently", "until", "it", "clicks", "and", "wait"]

    def rated_workspace(folder, sizes):
        store = FeedbackStore.for_workspace(folder)
        replies = []
        for i, size in enumerate(sizes):
            plain = " ".join(rng.choice(words) for _ in range(size)) + "."
            liked = plain + "\n\n— Ossa, Trevane support"
            store.add_vote([{"role": "user", "content": f"How do I fit Trevane part {i}?"}], "base:smollm2-135m",
                           "base:smollm2-135m", liked, plain, "a")
            replies.append(liked)
        return sorted(len(bundled_tokenizer.encode(r, add_special_tokens=False)) for r in replies)

    lengths = rated_workspace(tmp_path / "long", [rng.randint(60, 140) for _ in range(20)])
    _, policy = reward_rl_round(tmp_path / "long", "base:smollm2-135m")
    assert lengths[17] < policy.max_completion_length <= min(256, lengths[18] + 16), (lengths,
                                                                                    policy.max_completion_length)
    assert policy.max_completion_length % 16 == 0
    _, policy = reward_rl_round(tmp_path / "long", "base:smollm2-135m", max_completion_length=40)
    assert policy.max_completion_length == 40
    rated_workspace(tmp_path / "short", [rng.randint(3, 8) for _ in range(10)])
    _, policy = reward_rl_round(tmp_path / "short", "base:smollm2-135m")
    assert policy.max_completion_length == 48


@pytest.mark.slow
def test_a_reward_rl_round_trains_a_reward_model_then_rloo_from_the_rated_run(tmp_path, tiny_model_dir, sft_run):
    from ftchat.feedback import FeedbackStore

    workspace = tmp_path / "workspace"
    parent = copy_run(sft_run, workspace / "runs" / "zumo-sft")  # a finished LoRA SFT run on the tiny base
    rate(FeedbackStore.for_workspace(workspace), "zumo-sft", 8)
    run("round", "--from", "zumo-sft", "--method", "reward-rl", "--rl-method", "rloo", "--workspace", str(workspace),
        "--max-steps", "2", "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "8",
        "--compare-prompts", "0")
    rm_dir, rl_dir = workspace / "runs" / "zumo-sft-r1-rloo-rm", workspace / "runs" / "zumo-sft-r1-rloo"
    assert runs.load_run(rm_dir).state == "done" and runs.load_run(rl_dir).state == "done"
    assert runs.load_run(rm_dir).config["method"] == "reward"
    assert runs.load_run(rm_dir).summary["eval_accuracy"] is not None
    config = runs.load_run(rl_dir).config
    assert config["method"] == "rloo" and config["parent"] == str(parent) and config["reward"] == [str(rm_dir)]
    prompts = [json.loads(line) for line in open(config["data"][0])]
    assert [p["prompt"][-1]["content"] for p in prompts] == QUESTIONS  # the prompts the run was rated on
    assert runs.lineage(workspace / "runs", rl_dir.name) == [f"base:{tiny_model_dir}", "zumo-sft", rl_dir.name]
    assert any("reward" in m for m in runs.read_metrics(rl_dir))


@pytest.mark.slow
def test_a_reward_rl_round_started_from_the_feedback_tab_trains_the_reward_model_then_grpo(tmp_path, tiny_model_dir,
                                                                                             sft_run):
    """The Feedback tab's third round method: readiness first, then the reward model and, once it is done, GRPO
    from the rated run against it — two runs the Train tab shows one after the other."""
    import time

    from test_ui_api import AppProcess

    from ftchat.feedback import FeedbackStore

    workspace = tmp_path / "workspace"
    parent = copy_run(sft_run, workspace / "runs" / "zumo-sft")  # a finished LoRA SFT run on the tiny base
    store = FeedbackStore.for_workspace(workspace)
    rate(store, "zumo-sft", 5)
    app = AppProcess(workspace)
    try:
        client = app.client()
        not_yet = client.predict("zumo-sft", "reward-rl", api_name="/round_readiness")
        assert "Not yet" in not_yet and "need 3 more decisive vote" in not_yet, not_yet
        rate(store, "zumo-sft", 8)  # 13 pairs now, 8 distinct rated prompts
        ready = client.predict("zumo-sft", "reward-rl", api_name="/round_readiness")
        assert ready.startswith("Ready: 13 pairs") and "8 rated prompts" in ready, ready
        assert "taught by DPO or KTO" in ready, ready  # GRPO only reinforces what is sampled (docs/benchmarks.md)
        policy, message = client.predict("zumo-sft", "reward-rl", 2, api_name="/start_round")
        rm_dir, rl_dir = workspace / "runs" / "zumo-sft-r1-grpo-rm", workspace / "runs" / "zumo-sft-r1-grpo"
        assert policy == str(rl_dir) and "zumo-sft-r1-grpo-rm" in message, message
        states = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states.append((runs.load_run(rm_dir).state, runs.load_run(rl_dir).state))
            if states[-1][1] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert states[-1] == ("done", "done"), (states[-1], (rl_dir / "train.log").read_text()[-2000:]
                                                 if (rl_dir / "train.log").exists() else "")
        # the policy waited, queued, while the reward model trained
        assert ("running", "queued") in states or ("queued", "queued") in states, sorted(set(states))
        assert runs.load_run(rm_dir).summary["eval_accuracy"] is not None
        config = runs.load_run(rl_dir).config
        assert (config["method"], config["parent"], config["reward"]) == ("grpo", str(parent), [str(rm_dir)])
        assert config["max_steps"] == 2 and any("reward" in m for m in runs.read_metrics(rl_dir))
    finally:
        app.stop()
