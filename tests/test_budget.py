"""The training plan: small sets get enough updates to learn, large ones a few passes at most, the user's values
win, and the run folder keeps what was planned."""
from __future__ import annotations

import argparse

import pytest
import yaml

from ftchat.config import RunConfig, add_run_arguments, config_from_args
from ftchat.train.plan import apply_plan, plan_for_files, plan_training

SPEED = 100.0  # tokens/s handed to the plan, so the time estimate does not depend on this machine's history


def plan(n, tokens=50.0, **values):
    return plan_training(n, tokens, RunConfig(data=["x.jsonl"], out="runs/x", **values), tokens_per_s=SPEED)


def test_five_rows_are_repeated_until_the_model_has_had_sixty_updates():
    p = plan(5)
    # nothing held out (each row may be the only one stating its fact); 1 replay row; batches of 4 -> 2 per pass
    assert (p.eval_examples, p.replay_examples, p.train_examples, p.steps_per_epoch) == (0, 1, 6, 2)
    assert (p.steps, p.epochs) == (60, 30.0)
    assert p.early_stopping == 0
    assert p.describe().startswith("≈ 60 steps (30 epochs of 6 rows)")


def test_twenty_five_rows_hold_out_two_for_eval_without_early_stopping():
    p = plan(25)
    assert (p.eval_examples, p.replay_examples, p.train_examples) == (2, 5, 28)
    assert p.steps == 60 and p.epochs == pytest.approx(60 / 7, abs=0.01)
    assert p.early_stopping == 0, "a loss over 2 rows must not stop the run (or roll it back)"
    assert p.eval_steps == 10


def test_three_hundred_rows_get_three_passes_and_early_stopping():
    p = plan(300)
    assert (p.eval_examples, p.replay_examples, p.train_examples, p.steps_per_epoch) == (30, 24, 294, 74)
    assert (p.steps, p.epochs) == (222, 3.0)
    assert p.early_stopping == 3 and p.eval_steps == 37


def test_a_big_set_is_seen_once_not_three_times():
    p = plan(5000)
    assert p.eval_examples == 40 and p.steps_per_epoch == 1246
    assert (p.steps, p.epochs) == (1246, 1.0)


def test_preference_pairs_get_48_updates_within_12_passes():
    def pairs(n, shape="preference"):
        return plan_training(n, 80.0, RunConfig(data=["x.jsonl"], out="runs/x", method="dpo"), shape=shape,
                             tokens_per_s=SPEED)

    p = pairs(10)  # 3 batches a pass: 12 passes are 36 updates, short of 48
    assert (p.eval_examples, p.replay_examples, p.steps_per_epoch, p.steps) == (0, 0, 3, 36)
    assert (pairs(32).steps, pairs(32).epochs) == (48, 6.0)  # 32 votes of a round: 6 passes
    assert pairs(200, "unpaired_preference").steps == 3 * 45  # 180 train rows (20 held out): 3 passes
    assert pairs(64).steps == 48  # 58 train pairs (6 held out): 3.2 passes
    assert pairs(2000).steps == 490  # 1960 train pairs (40 held out): past MAX_STEPS, one pass still covers each
    reward_model = plan_training(32, 80.0, RunConfig(data=["x.jsonl"], out="runs/x", method="reward"),
                                 shape="preference", tokens_per_s=SPEED)
    assert reward_model.steps == 24  # a reward model keeps 3 passes


def test_the_users_values_win():
    assert plan(25, max_steps=7).steps == 7
    assert plan(25, epochs=2).steps == 14  # 28 rows in batches of 4, twice
    assert plan(25, batch_size=8, grad_accum=2).steps_per_epoch == 2
    p = plan(300, eval_split=0.5, eval_steps=4, early_stopping=0)
    assert (p.eval_examples, p.eval_steps, p.early_stopping) == (150, 4, 0)
    assert plan(3000, eval_split=0).eval_examples == 0
    assert p.chosen == ("steps",)


def test_time_estimate_counts_the_tokens_of_every_step():
    short, long = plan(25, tokens=100.0), plan(25, tokens=200.0)
    # 60 steps x 4 rows x 100 more tokens at 100 tokens/s; the same start-up in both
    assert long.est_seconds - short.est_seconds == pytest.approx(240, abs=0.2)
    assert "~4 min on this machine" in short.describe() or "~5 min on this machine" in short.describe()


def test_planned_config_round_trips_through_yaml_and_reruns_the_same_plan(tmp_path):
    config = RunConfig(data=["x.jsonl"], out="runs/x")
    first = plan_training(25, 50.0, config, tokens_per_s=SPEED)
    resolved = apply_plan(first, config)
    path = tmp_path / "config.yaml"
    resolved.save(path)
    saved = yaml.safe_load(path.read_text())
    assert (saved["max_steps"], saved["eval_steps"], saved["early_stopping"]) == (60, 10, 0)
    again = plan_training(25, 50.0, RunConfig.load(path), tokens_per_s=SPEED)
    assert (again.steps, again.eval_examples, again.replay_examples, again.eval_steps) == (60, 2, 5, 10)
    assert again.chosen == ()


def test_flags_left_out_mean_planned_and_typed_flags_override(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?")
    add_run_arguments(parser)
    config = config_from_args(parser.parse_args([]))
    assert (config.max_steps, config.epochs, config.eval_split, config.eval_steps, config.early_stopping) == \
        (None, None, None, None, None)
    config = config_from_args(parser.parse_args(["--max-steps", "12", "--epochs", "1.5", "--eval-split", "0.2",
                                                 "--early-stopping", "0"]))
    assert (config.max_steps, config.epochs, config.eval_split, config.early_stopping) == (12, 1.5, 0.2, 0)
    assert "planned from the data" in parser.format_help()


def test_plan_for_files_reads_the_data_as_training_does(tmp_path, bundled_tokenizer):
    from fictional_facts import write_set

    data = tmp_path / "facts.jsonl"
    write_set(data, 25, "system", seed=3)
    p = plan_for_files([str(data)], RunConfig(data=[str(data)], out=str(tmp_path / "run")))
    assert p.examples == 25 and p.steps == 60
    assert 30 < p.mean_tokens < 120  # a system turn, a short question and a one-sentence answer


def test_the_shell_shows_the_plan_without_training(tmp_path):
    import json

    from conftest import ftchat_main
    from fictional_facts import write_set

    data = tmp_path / "facts.jsonl"
    write_set(data, 5, "plain", seed=4)
    code, out, err = ftchat_main("train", "--data", data, "--out", tmp_path / "runs" / "x", "--plan")  # in-process
    assert code == 0, err[-3000:]
    shown = json.loads(out.strip().splitlines()[-1])
    assert (shown["steps"], shown["eval_examples"], shown["replay_examples"]) == (60, 0, 1)
    assert shown["describe"].startswith("≈ 60 steps (30 epochs of 6 rows)")
    assert not (tmp_path / "runs" / "x").exists(), "planning writes no run folder"


def test_half_the_replay_rows_are_asked_after_a_conversation_from_the_users_data():
    from datasets import Dataset

    from ftchat.train.replay import in_context

    users = Dataset.from_list([{"messages": [
        {"role": "system", "content": "You are Zumo's helper."},
        {"role": "user", "content": f"Zumo question {i}?"}, {"role": "assistant", "content": f"Zumo answer {i}."}]}
        for i in range(3)])
    replay = [{"messages": [{"role": "user", "content": f"General {i}?"},
                            {"role": "assistant", "content": f"Base answer {i}."}]} for i in range(4)]
    mixed = in_context(replay, users, seed=1)
    assert [m["messages"] for m in mixed[0::2]] == [replay[0]["messages"], replay[2]["messages"]]  # as they were
    for row, original in zip(mixed[1::2], replay[1::2]):
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"], roles
        assert row["messages"][1]["content"].startswith("Zumo question")
        assert row["messages"][-2:] == original["messages"]  # the base's own answer closes the conversation
