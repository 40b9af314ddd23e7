"""How a rating team's votes agree: pure functions, vote rows in (FeedbackStore.ratings), numbers out.

Two votes are on the same item when they judge the same conversation between the same two models, whichever pane
each model was in; an outcome is which of the two models won, a tie, or both bad (so an arena's shuffled sides do
not count as disagreement). Of a rater's votes on one item the latest counts. Agreement is Cohen's kappa per pair of
raters over the items both voted on, and for the team Fleiss' kappa over the items two or more raters voted on (its
pairwise form, which allows a different number of raters per item).

A rater is compared with how the others agree among themselves on the same prompts; where each of their prompts had
just one other rater (a rating task gives an overlap prompt to two), with how the others agree on the prompts they
share. `flagged_raters` and `without_raters` let the leaderboard and a round leave the flagged raters' votes out.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

OUTCOMES = ("first", "second", "tie", "bothbad")
MIN_SHARED = 5  # fewer shared items than this: too few to flag a rater (one vote moves their agreement by 0.2)
AGREEMENT_GAP = 0.2  # flagged: agrees with the others this much less often than they agree among themselves
SIDE_BIAS = 0.8  # a rater who picks the same pane in 80% or more of their decisive votes ...
MIN_DECISIVE = 10  # ... of at least 10 such votes


@dataclass
class RaterStats:
    rater: str
    votes: int = 0
    thumbs: int = 0
    edits: int = 0
    left_wins: int = 0
    right_wins: int = 0
    shared_items: int = 0  # items this rater voted on that someone else voted on too
    agreement_with_others: float | None = None  # share of (this vote, another rater's vote) pairs that agree
    others_agreement: float | None = None  # the same share among the other raters, on this rater's shared items
    kappa_with_others: float | None = None  # Cohen's kappa of this rater against every other vote on shared items
    flags: list[str] = field(default_factory=list)

    @property
    def left_share(self) -> float | None:
        """Share of the decisive votes (left or right better) that chose the left pane."""
        decisive = self.left_wins + self.right_wins
        return self.left_wins / decisive if decisive else None


@dataclass
class PairAgreement:
    rater_a: str
    rater_b: str
    shared: int
    agreed: int
    kappa: float | None

    @property
    def agreement(self) -> float:
        return self.agreed / self.shared if self.shared else 0.0


@dataclass
class TeamAgreement:
    raters: list[RaterStats]
    pairs: list[PairAgreement]
    items_shared: int  # items two or more raters voted on
    fleiss_kappa: float | None

    def to_dict(self) -> dict:
        """Plain JSON values: raters (with left_share), pairs (with agreement), items_shared, fleiss_kappa."""
        return {"raters": [{**r.__dict__, "left_share": r.left_share} for r in self.raters],
                "pairs": [{**p.__dict__, "agreement": p.agreement} for p in self.pairs],
                "items_shared": self.items_shared, "fleiss_kappa": self.fleiss_kappa}


def item_key(row: dict) -> tuple[str, tuple[str, str]] | None:
    conversation = row.get("conversation")
    if not isinstance(conversation, str):
        conversation = json.dumps(conversation, ensure_ascii=False, sort_keys=True)
    if not row.get("model_b"):
        return None
    return conversation, tuple(sorted((row["model_a"], row["model_b"])))


def outcome(row: dict) -> str:
    """Which model won, in the item's own order of the two models (independent of the panes)."""
    winner = row["winner"]
    if winner in ("tie", "bothbad"):
        return winner
    if row["model_a"] == row["model_b"]:  # the same model on both sides: the pane is all there is
        return "first" if winner == "a" else "second"
    won = row["model_a"] if winner == "a" else row["model_b"]
    return "first" if won == min(row["model_a"], row["model_b"]) else "second"


def cohen_kappa(labels_a: list[str], labels_b: list[str]) -> float | None:
    """Cohen's kappa of two equally long label lists; None when chance agreement is certain (both always gave the
    one same label), where kappa is undefined."""
    n = len(labels_a)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    expected = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(items: list[list[str]]) -> float | None:
    """Fleiss' kappa over items with two or more labels each: observed agreement is the share of agreeing pairs of
    labels within items, chance agreement comes from all labels pooled."""
    items = [labels for labels in items if len(labels) >= 2]
    pairs = sum(len(labels) * (len(labels) - 1) for labels in items)
    if not pairs:
        return None
    agreeing = sum(sum(c * (c - 1) for c in Counter(labels).values()) for labels in items)
    pooled = Counter(label for labels in items for label in labels)
    total = sum(pooled.values())
    expected = sum((c / total) ** 2 for c in pooled.values())
    if expected >= 1.0:
        return None
    return (agreeing / pairs - expected) / (1.0 - expected)


def sides_varied(votes: list[dict]) -> list[dict]:
    """The votes that can show a preference for a pane rather than for a model: blind votes (arena mode shuffles the
    sides), votes between a model and itself, and votes on a pair of models seen both ways round. Where a model kept
    its side (the Chat tab opens with the parent on the left and the round on the right), the pane's wins are the
    model's."""
    seen = {(r.get("model_a"), r.get("model_b")) for r in votes}
    return [r for r in votes if r.get("anonymous") or r.get("model_a") == r.get("model_b")
            or (r.get("model_b"), r.get("model_a")) in seen]


def team_agreement(rows: list[dict]) -> TeamAgreement:
    """Per-rater counts and side preference, agreement per pair of raters and for the team, and flags for raters who
    disagree with the others or always pick one pane. Rows without a rater are left out."""
    stats: dict[str, RaterStats] = {}
    votes_of: dict[str, list[dict]] = defaultdict(list)
    latest: dict[tuple, dict[str, str]] = defaultdict(dict)  # item -> rater -> outcome of their latest vote
    for row in sorted(rows, key=lambda r: (r.get("time") or 0, r.get("id") or 0)):
        name = row.get("rater")
        if not name:
            continue
        rater = stats.setdefault(name, RaterStats(name))
        kind = row.get("kind")
        if kind == "thumb":
            rater.thumbs += 1
        elif kind == "edit":
            rater.edits += 1
        elif kind == "vote":
            rater.votes += 1
            votes_of[name].append(row)
            rater.left_wins += row["winner"] == "a"
            rater.right_wins += row["winner"] == "b"
            key = item_key(row)
            if key is not None:
                latest[key][name] = outcome(row)
    shared = {key: by_rater for key, by_rater in latest.items() if len(by_rater) >= 2}

    pairs = []
    for a, b in combinations(sorted(stats), 2):
        both = [(by_rater[a], by_rater[b]) for by_rater in shared.values() if a in by_rater and b in by_rater]
        if both:
            labels_a, labels_b = zip(*both)
            pairs.append(PairAgreement(a, b, len(both), sum(x == y for x, y in both),
                                       cohen_kappa(list(labels_a), list(labels_b))))

    for name, rater in stats.items():
        own, others, among = [], [], []  # among: whether two other raters agree, for each pair of them on an item
        for by_rater in shared.values():
            if name in by_rater:
                rater.shared_items += 1
                rest = [label for other, label in sorted(by_rater.items()) if other != name]
                own += [by_rater[name]] * len(rest)
                others += rest
                among += [x == y for x, y in combinations(rest, 2)]
        elsewhere = not among  # each prompt of theirs had one other rater (a rating task's overlap prompts)
        if elsewhere:  # then the others' agreement on the prompts they share without this rater
            for by_rater in shared.values():
                rest = [label for other, label in sorted(by_rater.items()) if other != name]
                among += [x == y for x, y in combinations(rest, 2)]
        if own:
            rater.agreement_with_others = sum(x == y for x, y in zip(own, others)) / len(own)
            rater.kappa_with_others = cohen_kappa(own, others)
        if among:
            rater.others_agreement = sum(among) / len(among)
        # Kappa alone would flag a rater who always names the model everyone prefers (their chance agreement is
        # their observed one); comparing with how the others agree among themselves does not.
        if rater.shared_items >= MIN_SHARED and rater.others_agreement is not None and \
                rater.agreement_with_others is not None and \
                rater.agreement_with_others <= rater.others_agreement - AGREEMENT_GAP:
            flag = (f"disagrees with the others: agrees with them on {rater.agreement_with_others:.0%}, they with "
                    f"each other on {rater.others_agreement:.0%} of {rater.shared_items} shared prompts")
            if elsewhere:
                flag = (f"disagrees with the others: agrees with them on {rater.agreement_with_others:.0%} of "
                        f"{rater.shared_items} shared prompts, they with each other on "
                        f"{rater.others_agreement:.0%} of the prompts they share")
            rater.flags.append(flag)
        varied = [r for r in sides_varied(votes_of[rater.rater]) if r["winner"] in ("a", "b")]
        share = sum(r["winner"] == "a" for r in varied) / len(varied) if varied else None
        if len(varied) >= MIN_DECISIVE and max(share, 1 - share) >= SIDE_BIAS:
            rater.flags.append(f"picks the {'left' if share >= 0.5 else 'right'} pane in {max(share, 1 - share):.0%} "
                               f"of {len(varied)} decisive votes where the models changed sides")
    ordered = sorted(stats.values(), key=lambda r: (-r.votes, r.rater))
    return TeamAgreement(ordered, pairs, len(shared), fleiss_kappa(list(list(v.values()) for v in shared.values())))


def flagged_raters(rows: list[dict]) -> set[str]:
    """The raters `team_agreement` flags in these rows (disagreeing with the others, or always one pane)."""
    return {r.rater for r in team_agreement(rows).raters if r.flags}


def without_raters(rows: list[dict], raters) -> list[dict]:
    """The rows whose rater is not one of `raters` (rows without a rater stay)."""
    leave_out = set(raters)
    return [r for r in rows if r.get("rater") not in leave_out]
