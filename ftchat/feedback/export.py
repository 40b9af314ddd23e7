"""Ratings → training data in TRL's shapes (ftchat.data.shapes). Pure functions over store rows.

- `dpo` (shape `preference`): per decisive vote the winner's reply chosen, the loser's rejected; per edited answer
  the edit chosen, the model's reply rejected.
- `kto` (shape `unpaired_preference`): per thumb the reply with its label; per decisive vote the winner desirable
  and the loser undesirable; per "both bad" vote both undesirable.
- `sft` (shape `messages`): per edited answer and per thumbs-up reply, the conversation with that answer.
- `ratings`: the stored ratings themselves, which `FeedbackStore.import_file` reads back.

Deleted ratings, empty replies and pairs whose two replies are the same text are left out: they teach nothing.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from ftchat.feedback.imports import ratings_record

EXPORT_KINDS = ("dpo", "kto", "sft", "ratings")
SHAPE_OF_KIND = {"dpo": "preference", "kto": "unpaired_preference", "sft": "messages"}


def _live(rows):
    return [r for r in rows if not r.get("deleted")]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _prompt(row: dict) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in row["conversation"]]


def _usable(text) -> bool:
    return isinstance(text, str) and bool(text.strip())


def vote_outcome(row: dict) -> tuple[str, str] | None:
    """(winner's reply, loser's reply) of a decisive vote; None for ties and "both bad"."""
    if row["winner"] == "a":
        return row["reply_a"], row["reply_b"]
    if row["winner"] == "b":
        return row["reply_b"], row["reply_a"]
    return None


def to_dpo(rows: list[dict]) -> list[dict]:
    """prompt / chosen / rejected rows from decisive votes and edited answers."""
    out = []
    for row in _live(rows):
        if row["kind"] == "vote":
            outcome = vote_outcome(row)
            if outcome is None:
                continue
            chosen, rejected = outcome
        elif row["kind"] == "edit":
            chosen, rejected = row["edit"], row["reply_a"]
        else:
            continue
        if _usable(chosen) and _usable(rejected) and chosen.strip() != rejected.strip():
            out.append({"prompt": _prompt(row), "chosen": _assistant(chosen), "rejected": _assistant(rejected)})
    return out


def to_kto(rows: list[dict]) -> list[dict]:
    """prompt / completion / label rows from thumbs, votes (ties add nothing) and written answers (the answer good,
    the reply it replaces bad)."""
    out = []

    def add(row, text, label):
        if _usable(text):
            out.append({"prompt": _prompt(row), "completion": _assistant(text), "label": label})

    for row in _live(rows):
        if row["kind"] == "thumb":
            add(row, row["reply_a"], row["thumb"] > 0)
        elif row["kind"] == "vote":
            outcome = vote_outcome(row)
            if outcome is not None:
                if outcome[0].strip() == outcome[1].strip():
                    continue
                add(row, outcome[0], True)
                add(row, outcome[1], False)
            elif row["winner"] == "bothbad":
                add(row, row["reply_a"], False)
                if row["reply_b"].strip() != row["reply_a"].strip():
                    add(row, row["reply_b"], False)
        elif row["kind"] == "edit" and row["edit"].strip() != row["reply_a"].strip():
            add(row, row["edit"], True)
            add(row, row["reply_a"], False)
    return out


def to_sft(rows: list[dict]) -> list[dict]:
    """messages rows from edited answers and thumbs-up replies."""
    out = []
    for row in _live(rows):
        if row["kind"] == "edit":
            answer = row["edit"]
        elif row["kind"] == "thumb" and row["thumb"] > 0:
            answer = row["reply_a"]
        else:
            continue
        if _usable(answer):
            out.append({"messages": _prompt(row) + _assistant(answer)})
    return out


def to_ratings(rows: list[dict]) -> list[dict]:
    return [ratings_record(row) for row in _live(rows)]


CONVERTERS = {"dpo": to_dpo, "kto": to_kto, "sft": to_sft, "ratings": to_ratings}


class RatingsExportError(ValueError):
    """An export cannot be written as asked; the message says why."""


def convert(rows: list[dict], kind: str) -> list[dict]:
    if kind not in CONVERTERS:
        raise RatingsExportError(f"kind: '{kind}' is not one of {', '.join(EXPORT_KINDS)}.")
    return CONVERTERS[kind](rows)


def write_export(rows: list[dict], kind: str, out_path: str | Path, overwrite: bool = False) -> tuple[Path, int]:
    """Write the `kind` rows of the ratings to out_path: JSONL when it ends in .jsonl, else a `datasets`
    save_to_disk folder. Returns (path, number of rows); RatingsExportError when there is nothing to write, or
    when out_path exists (a file, or a folder with files in it) and `overwrite` is not given."""
    out_path = Path(out_path)
    if not overwrite and out_path.exists() and (out_path.is_file() or any(out_path.iterdir())):
        raise RatingsExportError(f"{out_path}: already exists; give a new --out, or add --force to write over it.")
    records = convert(rows, kind)
    if not records:
        raise RatingsExportError(f"no {kind} rows in the selected ratings: {_what_makes(kind)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".jsonl":
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        tmp.replace(out_path)
    else:
        if kind == "ratings":
            raise RatingsExportError("ratings exports are JSONL files only; give an --out ending in .jsonl.")
        import datasets

        datasets.Dataset.from_list(records).save_to_disk(str(out_path))
    return out_path, len(records)


def _what_makes(kind: str) -> str:
    return {
        "dpo": "DPO pairs come from votes with a winner (left or right is better) and from written better answers.",
        "kto": "KTO rows come from thumbs up/down and from votes other than a tie.",
        "sft": "SFT rows come from written better answers and thumbs-up replies.",
        "ratings": "there are no ratings.",
    }[kind]


def export_ratings(rows: list[dict], kind: str, exports_dir: str | Path) -> tuple[Path, int, Path | None]:
    """Write `rows` as `kind` training data under exports_dir: a JSONL file (feedback-KIND-DATE-TIME.jsonl; a name
    taken already gets -2, -3 …) and, except for `ratings`, a `datasets` folder of the same name beside it.
    Returns (file, rows written, folder or None)."""
    exports_dir = Path(exports_dir)
    exports_dir.mkdir(parents=True, exist_ok=True)
    stem = f"feedback-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    for candidate in itertools.chain([stem], (f"{stem}-{n}" for n in itertools.count(2))):
        path = exports_dir / f"{candidate}.jsonl"
        if (exports_dir / candidate).exists():
            continue
        try:
            path.open("x").close()  # claims the name: an export in the same second, in any process, gets the next
        except FileExistsError:
            continue
        break
    try:
        written = write_export(rows, kind, path, overwrite=True)[1]
        folder = write_export(rows, kind, exports_dir / candidate)[0] if kind != "ratings" else None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, written, folder
