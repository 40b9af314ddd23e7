""""Did this round help?": a round's report from real votes in a real SQLite store, in Python and through the CLI."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
from test_feedback_rounds import fake_run

from ftchat.cli import main as cli_main
from ftchat.feedback import FeedbackStore
from ftchat.feedback.report import ReportError, head_to_head, position_bias, rater_agreement, round_report, wilson


def ask(text):
    return [{"role": "user", "content": text}]


@pytest.fixture()
def rated_round(tmp_path):
    """zumo-sft → zumo-sft-r1-dpo, with 8 votes of the round against its parent (6 won, 2 lost; 3 of them blind)
    and 2 against the base."""
    runs = tmp_path / "runs"
    fake_run(runs, "zumo-sft-r1-dpo", parent=fake_run(runs, "zumo-sft"))
    store = FeedbackStore.for_workspace(tmp_path)
    for i in range(8):
        won = i < 6
        left_is_round = i % 2 == 0
        round_reply, parent_reply = f"round answer {i}", f"parent answer {i}"
        winner = "a" if won == left_is_round else "b"
        a, b = ("zumo-sft-r1-dpo", "zumo-sft") if left_is_round else ("zumo-sft", "zumo-sft-r1-dpo")
        ra, rb = (round_reply, parent_reply) if left_is_round else (parent_reply, round_reply)
        store.add_vote(ask(f"question {i}"), a, b, ra, rb, winner, rater="ann", anonymous=i < 3, when=1000 + i)
    for winner in ("a", "tie"):
        store.add_vote(ask("hello"), "zumo-sft-r1-dpo", "base:smollm2-135m", "hi", "hey", winner, rater="ann")
    return tmp_path, store


def test_the_report_gives_win_rates_with_intervals_and_the_prompts_it_lost(rated_round):
    workspace, store = rated_round
    report = round_report(store, workspace, "zumo-sft-r1-dpo")
    parent = report["against_parent"]
    assert (parent["against"], parent["votes"], parent["blind"], parent["wins"], parent["losses"]) == \
        ("zumo-sft", 8, 3, 6, 2)
    assert parent["win_rate"] == 0.75
    # the Wilson score interval of 6 of 8 (z = 1.96): 0.409 – 0.929, which still holds 50%
    assert parent["ci"] == pytest.approx([0.4093, 0.9285], abs=1e-3)
    assert parent["more_votes"] == 8  # at 75%, 16 votes are the first whose interval lies above 50%
    base = report["against_base"]
    assert (base["against"], base["votes"], base["win_rate"]) == ("base:smollm2-135m", 2, 0.75)
    lost = report["regressions"]
    assert [item["prompt"] for item in lost] == ["question 7", "question 6"]  # newest first
    assert lost[0]["round"] == "round answer 7" and lost[0]["parent"] == "parent answer 7"
    assert len(report["new_wins"]) == 6
    assert report["rate_next"][:2] == ["question 7", "question 6"]
    assert report["judged"] is None


def test_position_bias_and_rater_agreement_flag_a_rater_who_disagrees():
    rows = []
    for i, prompt in enumerate(["p1", "p2", "p3", "p4"]):
        for rater, winner in (("ann", "a"), ("bob", "a"), ("cy", "b")):
            rows.append({"id": len(rows), "prompt": prompt, "model_a": "m1", "model_b": "m2", "winner": winner,
                         "rater": rater, "deleted": False, "time": i})
    agreement = rater_agreement(rows)
    assert agreement["shared_votes"] == 12  # 4 prompts x 3 pairs of raters
    assert agreement["overall"] == pytest.approx(4 / 12, abs=1e-3)
    assert {tuple(p["raters"]): p["agreement"] for p in agreement["pairs"]} == \
        {("ann", "bob"): 1.0, ("ann", "cy"): 0.0, ("bob", "cy"): 0.0}
    assert agreement["flagged"] == ["cy"]
    bias = position_bias(rows)  # m1 on the left in every vote: no vote tells a side from a model
    assert (bias["left_share"], bias["votes"], bias["fixed_sides"]) == (None, 0, 12)
    # the same verdict on the other side is agreement: bob's vote for m1 placed on the right
    swapped = [dict(r, model_a="m2", model_b="m1", winner="b") if r["rater"] == "bob" else r for r in rows]
    assert rater_agreement(swapped)["flagged"] == ["cy"]
    bias = position_bias(swapped)  # now m1 was on both sides: the left pane won ann's 4 of the 12
    assert bias["left_share"] == pytest.approx(4 / 12, abs=1e-3) and bias["votes"] == 12


def test_the_left_panes_share_counts_only_votes_where_a_model_could_have_been_on_either_side():
    def votes(pairs_and_winners, **extra):
        return [{"id": i, "prompt": f"q{i}", "model_a": a, "model_b": b, "winner": w, "deleted": False, **extra}
                for i, (a, b, w) in enumerate(pairs_and_winners)]

    # the Chat tab put the parent left and the round right every time, and the round won 10 of 10: a model, not a side
    kept = position_bias(votes([("parent", "round", "b")] * 10))
    assert (kept["votes"], kept["left_share"], kept["fixed_sides"]) == (0, None, 10)
    # the same verdicts with the round on either side: the left pane won half
    swapped = position_bias(votes([("parent", "round", "b"), ("round", "parent", "a")] * 5))
    assert (swapped["votes"], swapped["left_share"], swapped["fixed_sides"]) == (10, 0.5, 0)
    # the left pane every time while the models swap sides, or in arena mode (shuffled sides): voting by side
    by_side = position_bias(votes([("parent", "round", "a"), ("round", "parent", "a")] * 5))
    blind = position_bias(votes([("parent", "round", "a")] * 10, anonymous=1))
    for bias in (by_side, blind):
        assert (bias["votes"], bias["left_share"]) == (10, 1.0) and bias["ci"][0] > 0.5


def test_head_to_head_without_votes_and_a_dead_even_rate():
    assert head_to_head([], "x", "y")["win_rate"] is None
    rows = [{"model_a": "x", "model_b": "y", "winner": w, "deleted": False} for w in ("a", "b")]
    assert head_to_head(rows, "x", "y")["more_votes"] is None  # 50%: no number of votes settles it
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_cli_prints_the_report_as_json_and_refuses_a_run_outside_the_workspace(rated_round, tmp_path_factory):
    workspace, _ = rated_round
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["round", "report", "zumo-sft-r1-dpo", "--json", "--workspace", str(workspace)]) == 0
    report = json.loads(out.getvalue())
    assert report["against_parent"]["win_rate"] == 0.75 and len(report["regressions"]) == 2
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["round", "report", "zumo-sft-r1-dpo", "--workspace", str(workspace)]) == 0
    assert "wins **75%** (95% interval 41%–93%) over 8 votes, 3 blind" in out.getvalue()
    elsewhere = fake_run(tmp_path_factory.mktemp("other") / "runs", "stranger")
    with pytest.raises(ReportError, match="no such run in this workspace"):
        round_report(FeedbackStore.for_workspace(workspace), workspace, str(elsewhere))
