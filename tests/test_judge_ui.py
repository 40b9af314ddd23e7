"""The reward model as a judge, in the app as a program drives it (`python app.py` in a subprocess, gradio_client):
the Feedback tab's lineage shows a round's judged win-rate against its parent beside the votes, and the Chat tab's
prompt queue asks first the prompts where the reward model is least sure which pane's reply is better.

The expected figures are recomputed here from the replies with transformers + peft, not with ftchat's scorer."""
from __future__ import annotations

import json
import re
import time

import pytest
import torch
from conftest import write_jsonl
from peft import PeftModel
from test_reward import rm_pairs, train
from test_ui_api import AppProcess, make_workspace
from transformers import AutoModelForSequenceClassification

from ftchat.feedback import FeedbackStore, judge
from ftchat.feedback.rounds import fair_judge, lineage_win_rates

# Fictional questions about a town's shops; the tuned run learns courteous answers to them.
SHOP_QUESTIONS = ["Is the Ombrel bakery open late?", "Do you stock Fennick soap?", "Where is the Tallow bridge stall?",
                  "Can I order a Quenby cake?", "Who repairs Harlop clocks?", "Is there parking at Mirewood market?",
                  "Do you take cards at the Pellin kiosk?", "How far is the Saltmarsh ferry?",
                  "Does the Yarrow cafe serve soup?", "When do the Crumley gates close?",
                  "Are dogs allowed in the Nettle arcade?", "Can I return a Brisco kettle?"]
COURTEOUS = "Thank you for asking! I am glad to help."
QUEUE_PROMPTS = ["Is the Dunmore library open on Monday?", "Do you sell Wickham jam?", "Whatever, tell me the time.",
                 "Where do I park near Elsby square?", "Can I book the Farrow hall?"]


@pytest.fixture(scope="module")
def judged_app(tmp_path_factory, tiny_model_dir):
    """A workspace with a reward model (polite over rude) and a LoRA run tuned from the tiny base, and the app."""
    workspace = make_workspace(tmp_path_factory.mktemp("judge-ui"), tiny_model_dir)
    base = workspace / "models" / "tiny"
    rm_dir, _ = train(workspace, rm_pairs(workspace), base, "rm", method="reward", adapter="lora", lr=2e-2,
                      max_steps=4, eval_split=0.25)
    chats = write_jsonl(workspace / "shop.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": COURTEOUS}]}
        for q in SHOP_QUESTIONS])
    tuned_dir, _ = train(workspace, chats, base, "tuned", adapter="lora", lr=2e-2, max_steps=4, eval_split=0.25)
    app = AppProcess(workspace)
    app.base, app.rm_dir, app.tuned_dir = base, rm_dir, tuned_dir
    yield app
    app.stop()


@pytest.fixture(scope="module")
def independent_scorer(judged_app):
    """score(conversation) with the reward run loaded by plain transformers + peft."""
    from ftchat.models import load_tokenizer

    tokenizer = load_tokenizer(judged_app.base)
    model = AutoModelForSequenceClassification.from_pretrained(judged_app.base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, judged_app.rm_dir / "adapter").eval()

    def score(conversation: list[dict]) -> float:
        ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    return score


@pytest.mark.slow  # with the fixture: two short trainings and an app start (~50 s on 2 busy cores)
def test_the_lineage_shows_the_judged_win_rate_beside_the_votes(judged_app, independent_scorer):
    client = judged_app.client()
    parent = f"base:{judged_app.base}"
    store = FeedbackStore.for_workspace(judged_app.workspace)
    for winner in ("a", "a", "b"):  # people: the tuned run wins 2 of 3 against its base
        store.add_vote([{"role": "user", "content": "Is the Gorrel pool heated?"}], "tuned", parent, "x", "y", winner)
    before = client.predict("tuned", api_name="/lineage")
    assert "judged: not yet" in before and "3 votes" in before

    with pytest.raises(Exception, match="judges replies"):  # a reward model is not a chat model to judge
        client.predict("rm", "rm", "held_out", 3, api_name="/judge_parent")
    status, shown = client.predict("tuned", "rm", "held_out", 3, api_name="/judge_parent")
    assert "✓ judged **tuned**" in status

    kept = json.loads((judged_app.tuned_dir / "judge.json").read_text())
    (judgement,) = kept.values()
    rows = judgement["rows"]
    assert len(rows) == 3 and {r["prompt"] for r in rows} <= set(SHOP_QUESTIONS)  # from the run's own data
    wins = 0.0
    for row in rows:  # the reward model's verdict on each pair of replies, scored here independently
        prompt = [{"role": "user", "content": row["prompt"]}]
        a = independent_scorer(prompt + [{"role": "assistant", "content": row["reply_a"]}])
        b = independent_scorer(prompt + [{"role": "assistant", "content": row["reply_b"]}])
        assert abs(a - b) > 1e-4, "a near tie would make the expected figure depend on rounding"
        wins += 1.0 if a > b else 0.0
    expected = wins / 3

    html = client.predict("tuned", api_name="/lineage")
    assert html == shown  # the button redrew the lineage
    tuned_box = html.split("class='lineage-step")[-1]
    assert "votes: wins <b>67%</b> against its parent (3 votes)" in tuned_box
    judged = re.search(r"judged: <b>(\d+)%</b> \[(\d+)%–(\d+)%\] by (\S+) \((\d+) prompts\)", tuned_box)
    assert judged, tuned_box
    rate, low, high = (int(judged[i]) for i in (1, 2, 3))
    assert rate == round(expected * 100)
    assert low <= rate <= high
    assert (judged[4], judged[5]) == ("rm", "3")


@pytest.mark.slow
def test_the_prompt_queue_asks_where_the_reward_model_is_least_sure_first(judged_app, independent_scorer):
    client = judged_app.client()
    left, right = f"base:{judged_app.base}", str(judged_app.tuned_dir)
    assert client.predict(None, None, "\n".join(QUEUE_PROMPTS), api_name="/load_prompts") == \
        "5 prompts loaded from typed prompts"
    progress, table, measured = client.predict("rm", left, right, True, api_name="/rank_prompts")
    assert progress == "5 prompts loaded from typed prompts, least sure first"

    gaps = {}
    for row in measured:  # the margin of each prompt's two replies, scored here independently
        prompt = [{"role": "user", "content": row["prompt"]}]
        gaps[row["prompt"]] = abs(independent_scorer(prompt + [{"role": "assistant", "content": row["reply_left"]}])
                                  - independent_scorer(prompt + [{"role": "assistant", "content": row["reply_right"]}]))
    assert sorted(gaps) == sorted(QUEUE_PROMPTS)
    assert max(gaps.values()) - min(gaps.values()) > 1e-3, "the two models' replies should differ in score"
    shown_order = [row[1] for row in table["value"]["data"]] if "value" in table else [row[1] for row in table["data"]]
    assert shown_order == sorted(QUEUE_PROMPTS, key=lambda p: gaps[p]) or \
        all(gaps[a] <= gaps[b] + 1e-4 for a, b in zip(shown_order, shown_order[1:]))  # near-equal margins may swap
    shown_margins = [float(row[2]) for row in (table["value"] if "value" in table else table)["data"]]
    assert shown_margins == pytest.approx([gaps[p] for p in shown_order], abs=0.006)

    message, *_, progress = client.predict("", api_name="/next_prompt")
    assert message == shown_order[0]
    assert progress.startswith(f"prompt 1 of 5 · RM margin {shown_margins[0]:.2f} — ")
    message, *_, progress = client.predict("", api_name="/next_prompt")
    assert message == shown_order[1] and progress.startswith("prompt 2 of 5 · RM margin ")

    _, unranked, _ = client.predict("rm", left, right, False, api_name="/rank_prompts")  # the option off: no order
    assert (unranked.get("visible") if isinstance(unranked, dict) else None) is False


# -- the rules behind the two views, without the app --------------------------------------------------------------

def test_a_judgement_is_found_however_its_opponent_was_spelled(tmp_path):
    run_dir = tmp_path / "runs" / "zumo-r1-dpo"
    run_dir.mkdir(parents=True)
    old = {"against": str(tmp_path / "runs" / "zumo"), "win_rate": 0.25, "time": time.time() - 60}
    judge.write_judgement(run_dir, old)
    judge.write_judgement(run_dir, {"against": "base:smollm2-135m", "win_rate": 0.9, "time": time.time()})
    assert judge.judgement_against(run_dir, "zumo")["win_rate"] == 0.25  # by folder name
    judge.write_judgement(run_dir, {"against": "zumo", "win_rate": 0.75, "time": time.time()})
    kept = json.loads((run_dir / "judge.json").read_text())
    assert sorted(kept) == ["base:smollm2-135m", "zumo"]  # the newer judgement replaced the old spelling
    assert judge.judgement_against(run_dir, str(tmp_path / "elsewhere" / "zumo"))["win_rate"] == 0.75
    assert judge.judgement_against(run_dir, "base:smollm2-135m")["win_rate"] == 0.9
    assert judge.judgement_against(run_dir, "zumo-r2-dpo") is None


def test_a_round_is_judged_by_a_reward_model_it_was_not_trained_against(tmp_path):
    from test_feedback_rounds import fake_run

    from ftchat.config import RunConfig

    root = tmp_path / "runs"
    parent = fake_run(root, "zumo")
    older_rm, newer_rm = root / "zumo-rm-a", root / "zumo-rm-b"
    rl = fake_run(root, "zumo-r1-grpo", parent=parent)
    RunConfig(data=["x.jsonl"], out=str(rl), base="smollm2-135m", method="grpo", parent=str(parent),
              reward=[str(newer_rm)]).save(rl / "config.yaml")
    assert fair_judge(rl, [newer_rm, older_rm]) == older_rm  # the one it was trained to please would flatter it
    assert fair_judge(parent, [newer_rm, older_rm]) == newer_rm
    assert fair_judge(rl, [newer_rm]) == newer_rm  # no other: the only one there is
    assert fair_judge(rl, []) is None
    judge.write_judgement(rl, {"against": str(parent), "win_rate": 0.5, "time": time.time()})
    steps = lineage_win_rates(FeedbackStore.for_workspace(tmp_path), root, "zumo-r1-grpo")
    assert [s["judged"]["win_rate"] if s["judged"] else None for s in steps] == [None, None, 0.5]


def test_a_round_can_be_judged_on_the_prompts_it_and_its_parent_were_rated_on(tmp_path):
    from test_feedback_rounds import fake_run

    from ftchat.feedback.rounds import RoundError, judge_prompts

    root = tmp_path / "runs"
    parent = fake_run(root, "zumo")
    round_dir = fake_run(root, "zumo-r1-dpo", parent=parent)
    store = FeedbackStore.for_workspace(tmp_path)
    with pytest.raises(RoundError, match="neither zumo-r1-dpo nor its parent has been rated"):
        judge_prompts(store, round_dir, str(parent), "ratings")
    asked = [[{"role": "user", "content": q}] for q in ("Is the Gorrel pool heated?", "Who rents Tamsin boats?")]
    store.add_vote(asked[0], "zumo", "base:smollm2-135m", "x", "y", "a")
    store.add_thumb(asked[1], "zumo-r1-dpo", "z", True)
    store.add_vote(asked[0], "zumo", "zumo-r1-dpo", "x", "y", "b")  # the same prompt again counts once
    store.add_vote([{"role": "user", "content": "Unrelated?"}], "base:smollm2-135m", "other", "x", "y", "a")
    assert judge_prompts(store, round_dir, str(parent), "ratings") == [asked[1], asked[0]]
    assert judge_prompts(store, round_dir, str(parent), "ratings", limit=1) == [asked[1]]
    with pytest.raises(RoundError, match="prompt source"):
        judge_prompts(store, round_dir, str(parent), "everything")
