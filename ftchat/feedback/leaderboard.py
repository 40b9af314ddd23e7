"""Who wins: Bradley–Terry ratings with bootstrap intervals, the pairwise win-rate matrix. Pure: votes in, numbers
out (as FastChat's rating_systems.py; no storage, no UI).

A vote is a dict with `model_a`, `model_b`, `winner` ∈ a | b | tie | bothbad (store rows of kind "vote"; other
kinds and deleted rows are ignored). A tie, "both bad" included, counts half a win for each side, as Chatbot
Arena counts it. With `exclude_flagged` the votes of the raters ftchat.feedback.agreement flags (found in the same
votes) are left out. Ratings are on the Elo scale: a 400-point gap means 10:1 odds of winning, and the mean of all
models is 1000. Each pair of models that met also plays one virtual tie (VIRTUAL_TIES), so a few votes that all agree
read as a likely win with a wide interval, not as a gap of 2000 points known to the point.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from ftchat.feedback.agreement import flagged_raters, without_raters

SCALE = 400.0
CENTER = 1000.0
# A faint pull of every strength towards the mean: keeps a model that won (or lost) every vote finite without
# moving the others (FastChat's logistic regression uses C=1e6 for the same reason).
L2 = 1e-6
# One virtual tie per pair of models that met, as BayesElo's virtual draws: without it, six votes of six put the two
# models at the scale's ends and every bootstrap resample is the same sweep, so the interval has no width. For one
# pair it is the Haldane–Anscombe half-count (6 of 6 reads as 6.5 : 0.5); its pull fades as votes come in.
VIRTUAL_TIES = 1.0


@dataclass
class Rating:
    model: str
    rating: float
    ci_low: float
    ci_high: float
    votes: int
    rank: int

    def to_dict(self) -> dict:
        return asdict(self)


def votes_of(rows, anonymous_only: bool = False, exclude_flagged: bool = False) -> list[dict]:
    """The live votes among store rows (optionally only those cast in arena mode, or without the flagged raters')."""
    rows = list(rows)
    if exclude_flagged:
        rows = without_raters(rows, flagged_raters([r for r in rows if not r.get("deleted")]))
    return [r for r in rows
            if r.get("kind", "vote") == "vote" and not r.get("deleted") and r.get("winner") in ("a", "b", "tie", "bothbad")
            and r.get("model_a") != r.get("model_b") and (not anonymous_only or r.get("anonymous"))]


def _score(winner: str) -> float:
    """model_a's share of one vote."""
    return {"a": 1.0, "b": 0.0}.get(winner, 0.5)


def _encode(votes: list[dict]):
    models = sorted({v["model_a"] for v in votes} | {v["model_b"] for v in votes})
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[v["model_a"]] for v in votes], dtype=np.int64)
    b = np.array([index[v["model_b"]] for v in votes], dtype=np.int64)
    s = np.array([_score(v["winner"]) for v in votes], dtype=np.float64)
    return models, a, b, s


def _fit(n_models: int, a, b, s, weights, covariance: bool = False):
    """Strengths (natural log-odds units, mean 0) for weighted votes plus the virtual ties, by Newton's method on the
    convex negative log-posterior (a few models: the n×n Hessian is cheap); with `covariance`, also the covariance of
    the centred strengths from that Hessian (the posterior's normal approximation)."""
    # aggregate per ordered pair: wins of a over b, and the number of games, so each step is O(models²)
    wins = np.zeros((n_models, n_models))
    games = np.zeros((n_models, n_models))
    np.add.at(wins, (a, b), weights * s)
    np.add.at(games, (a, b), weights)
    met = np.triu((games + games.T) > 0, 1)
    games[met] += VIRTUAL_TIES
    wins[met] += VIRTUAL_TIES / 2
    pair_a, pair_b = np.nonzero(games)
    w, g = wins[pair_a, pair_b], games[pair_a, pair_b]
    ridge = 2 * L2 * g.sum()

    def loss(theta):
        d = theta[pair_a] - theta[pair_b]
        # -[w log σ(d) + (g - w) log σ(-d)], with logaddexp so a large |d| stays finite
        return np.sum(w * np.logaddexp(0, -d) + (g - w) * np.logaddexp(0, d)) + ridge / 2 * np.sum(theta ** 2)

    def hessian_of(theta, ridge):
        d = theta[pair_a] - theta[pair_b]
        p = 0.5 * (1 + np.tanh(d / 2))  # σ(d) without overflow
        h = g * p * (1 - p)
        hessian = ridge * np.eye(n_models)
        np.add.at(hessian, (pair_a, pair_a), h)
        np.add.at(hessian, (pair_b, pair_b), h)
        np.add.at(hessian, (pair_a, pair_b), -h)
        np.add.at(hessian, (pair_b, pair_a), -h)
        return p, hessian

    theta = np.zeros(n_models)
    current = loss(theta)
    for _ in range(200):
        p, hessian = hessian_of(theta, ridge)
        grad_d = g * p - w
        grad = ridge * theta
        np.add.at(grad, pair_a, grad_d)
        np.add.at(grad, pair_b, -grad_d)
        step = np.linalg.solve(hessian, -grad)
        size = 1.0
        while size > 1e-8:  # backtracking: never a step that makes the fit worse
            candidate = theta + size * step
            value = loss(candidate)
            if value <= current + 1e-4 * size * grad.dot(step):
                break
            size /= 2
        theta, previous, current = candidate, current, value
        if previous - current < 1e-12 * max(1.0, abs(current)) and np.abs(grad).max() < 1e-6 * max(1.0, g.sum()):
            break
    if not covariance:
        return theta - theta.mean()
    # Ratings are relative: the pseudo-inverse leaves out the common shift (and, where groups of models never met
    # one another, the shift between groups, which the votes do not measure).
    return theta - theta.mean(), np.linalg.pinv(hessian_of(theta, 0.0)[1], hermitian=True)


def to_elo(theta: np.ndarray) -> np.ndarray:
    return CENTER + SCALE * theta / math.log(10)


def bradley_terry(votes, anonymous_only: bool = False, bootstrap: int = 100, seed: int = 0,
                  confidence: float = 0.95, exclude_flagged: bool = False) -> list[Rating]:
    """Ratings sorted best first, each with a `confidence` interval that spans both the spread of `bootstrap`
    resamples of the votes (seeded; it shows a model's results varying) and the posterior's normal interval (it shows
    how few the votes are, which resampling cannot when they all agree); and Chatbot Arena's rank: 1 + the number of
    models whose lower bound lies above this model's upper bound."""
    votes = votes_of(votes, anonymous_only, exclude_flagged)
    if not votes:
        return []
    models, a, b, s = _encode(votes)
    n = len(models)
    theta, covariance = _fit(n, a, b, s, np.ones(len(votes)), covariance=True)
    point = to_elo(theta)
    half_width = NormalDist().inv_cdf(0.5 + confidence / 2) * SCALE / math.log(10) * np.sqrt(np.diag(covariance))
    rng = np.random.default_rng(seed)
    samples = np.full((max(bootstrap, 0), n), np.nan)
    for i in range(max(bootstrap, 0)):
        counts = rng.multinomial(len(votes), np.full(len(votes), 1.0 / len(votes))).astype(np.float64)
        present = np.zeros(n, dtype=bool)
        present[a[counts > 0]] = True
        present[b[counts > 0]] = True
        elo = to_elo(_fit(n, a, b, s, counts))
        samples[i, present] = elo[present]  # a model absent from a resample has no rating in it
    tail = (1 - confidence) / 2 * 100
    low, high = point - half_width, point + half_width
    if bootstrap > 0:
        low = np.minimum(low, np.nanpercentile(samples, tail, axis=0))
        high = np.maximum(high, np.nanpercentile(samples, 100 - tail, axis=0))
    n_votes = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    ratings = [Rating(models[i], round(float(point[i]), 1), round(float(low[i]), 1), round(float(high[i]), 1),
                      int(n_votes[i]), 0) for i in range(n)]
    for r in ratings:
        r.rank = 1 + sum(other.ci_low > r.ci_high for other in ratings)
    return sorted(ratings, key=lambda r: (-r.rating, r.model))


def win_matrix(votes):
    """pandas DataFrame: row model's share of its votes against the column model (ties half), NaN where the two
    never met. Rows and columns are ordered by overall win share."""
    import pandas as pd

    votes = votes_of(votes)
    models = sorted({v["model_a"] for v in votes} | {v["model_b"] for v in votes})
    wins = pd.DataFrame(0.0, index=models, columns=models)
    games = pd.DataFrame(0.0, index=models, columns=models)
    for v in votes:
        share = _score(v["winner"])
        wins.loc[v["model_a"], v["model_b"]] += share
        wins.loc[v["model_b"], v["model_a"]] += 1 - share
        games.loc[v["model_a"], v["model_b"]] += 1
        games.loc[v["model_b"], v["model_a"]] += 1
    matrix = wins / games.where(games > 0)
    order = (wins.sum(axis=1) / games.sum(axis=1).where(lambda x: x > 0)).sort_values(ascending=False).index
    return matrix.loc[order, order]


def win_rate(votes, a: str, b: str) -> tuple[float | None, int]:
    """(a's share of its votes against b with ties half, number of such votes); (None, 0) when they never met."""
    total, n = 0.0, 0
    for v in votes_of(votes):
        if (v["model_a"], v["model_b"]) == (a, b):
            total += _score(v["winner"])
        elif (v["model_a"], v["model_b"]) == (b, a):
            total += 1 - _score(v["winner"])
        else:
            continue
        n += 1
    return (total / n if n else None), n
