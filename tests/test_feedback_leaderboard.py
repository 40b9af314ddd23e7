"""The leaderboard: Bradley–Terry on votes drawn from known strengths finds their order and its 95% intervals cover
the true ratings; ties count half; ranks account for overlapping intervals; the CLI prints it as JSON."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys

from conftest import ROOT

from ftchat.feedback import FeedbackStore
from ftchat.feedback.leaderboard import bradley_terry, win_matrix, win_rate

PROMPT = [{"role": "user", "content": "Describe the Zumo lamp."}]


def vote(a, b, winner, anonymous=False):
    return {"kind": "vote", "model_a": a, "model_b": b, "winner": winner, "anonymous": anonymous}


def draw_votes(strengths: dict[str, float], n: int, rng: random.Random) -> list[dict]:
    """Votes between random pairs, each won by a with probability 1 / (1 + exp(strength_b - strength_a))."""
    names = list(strengths)
    votes = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        p_a = 1 / (1 + math.exp(strengths[b] - strengths[a]))
        votes.append(vote(a, b, "a" if rng.random() < p_a else "b"))
    return votes


def test_bradley_terry_recovers_known_strengths_and_its_intervals_cover_them():
    strengths = {"base:smollm2": -0.9, "zumo-sft": -0.2, "zumo-sft-r1-dpo": 0.3, "oracle": 1.1}  # natural log-odds
    mean = sum(strengths.values()) / len(strengths)
    # On the Elo scale: 400 points are 10:1 odds, and the models average 1000.
    true_elo = {m: 1000 + 400 * math.log10(math.exp(s - mean)) for m, s in strengths.items()}
    true_order = sorted(strengths, key=strengths.get, reverse=True)
    rng = random.Random(7)
    experiments, covered, checked, ordered = 20, 0, 0, 0
    for experiment in range(experiments):
        ratings = bradley_terry(draw_votes(strengths, 600, rng), bootstrap=100, seed=experiment)
        ordered += [r.model for r in ratings] == true_order
        for r in ratings:
            assert r.ci_low <= r.rating <= r.ci_high
            checked += 1
            covered += r.ci_low <= true_elo[r.model] <= r.ci_high
    assert ordered >= 19, f"the order was right in {ordered} of {experiments} experiments"
    assert covered / checked >= 0.8, f"95% intervals covered the truth {covered} times of {checked}"
    assert checked == 4 * experiments


def test_a_tie_counts_half_a_win_for_each_side():
    with_ties = [vote("tuned", "base", "a")] * 3 + [vote("tuned", "base", "tie"), vote("base", "tuned", "bothbad")]
    decisive = [vote("tuned", "base", "a")] * 4 + [vote("base", "tuned", "a")]
    # 4 of 5 either way, plus the pair's virtual tie: 4.5 to 1.5, so 400·log10(3) points apart, split around 1000
    gap = 400 * math.log10(4.5 / 1.5)
    for votes in (with_ties, decisive):
        ratings = {r.model: r for r in bradley_terry(votes, bootstrap=0)}
        found = ratings["tuned"].rating - ratings["base"].rating
        assert abs(found - gap) < 0.2, found
        assert abs(ratings["tuned"].rating + ratings["base"].rating - 2000) < 0.2
    rate, n = win_rate(with_ties, "tuned", "base")
    assert abs(rate - 0.8) < 1e-9 and n == 5
    rate, n = win_rate(with_ties, "base", "tuned")
    assert abs(rate - 0.2) < 1e-9 and n == 5


def test_a_clean_sweep_reads_as_a_likely_win_and_only_many_votes_make_it_sure():
    for n, ranks in ((6, {"tuned": 1, "base": 1}), (60, {"tuned": 1, "base": 2})):
        # the models change sides, as in arena mode; every vote goes to tuned
        votes = [vote("tuned", "base", "a") if i % 2 else vote("base", "tuned", "b") for i in range(n)]
        ratings = {r.model: r for r in bradley_terry(votes, bootstrap=100, seed=n)}
        gap = ratings["tuned"].rating - ratings["base"].rating
        # n wins and the virtual tie's half against its half: 400·log10((n + 0.5) / 0.5) points, not the scale's end
        assert abs(gap - 400 * math.log10((n + 0.5) / 0.5)) < 0.5, (n, gap)
        for r in ratings.values():
            # every resample of a sweep is the same sweep; the interval still has width
            assert r.ci_high - r.ci_low > 300 and r.ci_low < r.rating < r.ci_high, (n, r)
        assert {m: r.rank for m, r in ratings.items()} == ranks, (n, ratings)


def test_rank_counts_only_models_that_are_surely_better():
    rng = random.Random(3)
    # two models of equal strength far below a third: they share rank 2
    votes = draw_votes({"strong": 2.5, "twin-a": 0.0, "twin-b": 0.0}, 900, rng)
    ratings = bradley_terry(votes, bootstrap=100, seed=1)
    assert [r.model for r in ratings][0] == "strong"
    ranks = {r.model: r.rank for r in ratings}
    assert ranks == {"strong": 1, "twin-a": 2, "twin-b": 2}
    assert all(r.votes > 500 for r in ratings)


def test_anonymous_only_and_deleted_votes():
    votes = [vote("a", "b", "a", anonymous=True), vote("a", "b", "b"), vote("b", "c", "a", anonymous=True)]
    votes.append({**vote("c", "a", "a", anonymous=True), "deleted": True})
    assert {r.model for r in bradley_terry(votes, bootstrap=10)} == {"a", "b", "c"}
    blind = bradley_terry(votes, anonymous_only=True, bootstrap=10)
    assert {r.model: r.votes for r in blind} == {"a": 1, "b": 2, "c": 1}
    assert bradley_terry([], bootstrap=10) == []


def test_win_matrix_with_ties_and_pairs_that_never_met():
    votes = ([vote("tuned", "base", "a")] * 3 + [vote("base", "tuned", "a"), vote("base", "tuned", "tie")]
             + [vote("other", "tuned", "b")])
    matrix = win_matrix(votes)
    assert abs(matrix.loc["tuned", "base"] - 3.5 / 5) < 1e-9
    assert abs(matrix.loc["base", "tuned"] - 1.5 / 5) < 1e-9
    assert matrix.loc["tuned", "other"] == 1.0 and matrix.loc["other", "tuned"] == 0.0
    assert math.isnan(matrix.loc["base", "other"]) and math.isnan(matrix.loc["base", "base"])
    assert list(matrix.index)[0] == "tuned"  # the best overall first
    assert win_rate(votes, "tuned", "nobody") == (None, 0)


def test_cli_leaderboard_json(tmp_path):
    store = FeedbackStore.for_workspace(tmp_path)
    for i in range(12):
        store.add_vote(PROMPT, "base:smollm2-135m", "zumo-sft", "A lamp.", "The teal Zumo lamp by Brightnook.",
                       "b" if i % 4 else "a", anonymous=True)
    result = subprocess.run([sys.executable, "-m", "ftchat", "feedback", "leaderboard", "--json", "--workspace",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=True)
    board = json.loads(result.stdout)
    assert [row["model"] for row in board] == ["zumo-sft", "base:smollm2-135m"]
    assert set(board[0]) == {"model", "rating", "ci_low", "ci_high", "votes", "rank"}
    # 9 of 12 won, plus the virtual tie: 9.5 to 3.5
    assert abs(board[0]["rating"] - board[1]["rating"] - 400 * math.log10(9.5 / 3.5)) < 0.5
    assert board[0]["votes"] == 12 and board[0]["rank"] == 1
