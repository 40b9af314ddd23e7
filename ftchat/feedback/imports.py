"""Ratings collected elsewhere → rows for the ratings table.

Two formats:
- Chatbot Arena / FastChat battle JSONL: `model_a`, `model_b`, `winner` ∈ model_a | model_b | tie | tie (bothbad),
  `conversation_a`, `conversation_b` (OpenAI message lists ending with each model's reply); optional `judge` (the
  rater), `anony` (arena mode), `tstamp` (unix time).
- ftchat's own ratings export (export.write_export(kind="ratings")): one stored rating per line, marked with
  `"format": "ftchat-ratings-1"`.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from ftchat.data import readers
from ftchat.data.shapes import DataError
from ftchat.feedback.store import (
    RATING_KINDS,
    RATINGS_FORMAT,
    SIDES,
    WINNERS,
    FeedbackError,
    FeedbackStore,
    check_conversation,
    import_key,
    prompt_text,
)

BATTLE_WINNERS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "bothbad"}


@dataclass
class ImportProblem:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


@dataclass
class ImportReport:
    file: str
    format: str | None = None  # "battle" (Chatbot Arena / FastChat) | "ftchat" (our ratings export)
    added: int = 0
    duplicates: int = 0  # rows already imported before
    problems: list[ImportProblem] = field(default_factory=list)
    error: str | None = None  # the whole file could not be read

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.error:
            return f"{self.file}: {self.error}"
        text = f"{self.file}: {self.added} rating(s) imported ({self.format})"
        if self.duplicates:
            text += f", {self.duplicates} already there"
        if self.problems:
            text += f", {len(self.problems)} row(s) skipped"
        return text


def import_file(store: FeedbackStore, path: str | os.PathLike) -> ImportReport:
    """Add the ratings of a Chatbot Arena / FastChat battle JSONL file or of an ftchat ratings export to `store`.
    Bad rows are skipped and listed with line and field; a row imported before is counted once."""
    report = ImportReport(file=str(path))
    parsed = parse_ratings_file(path, report)
    if report.ok:
        report.added, report.duplicates = store.add_imported(parsed, str(path), report.format, len(report.problems))
    return report


class RowProblem(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def parse_ratings_file(path, report: ImportReport) -> list[dict]:
    """Column values for each usable row of the file; problems (and a whole-file error) land in the report."""
    name = readers.display_name(str(path))
    records = []
    try:
        for item in readers.jsonl_records(str(path), name):  # also a JSON array, as FastChat's clean_battle.json
            if isinstance(item, tuple):
                records.append((item[0], item[2]))
            else:
                report.problems.append(ImportProblem(item.line, "(line)", item.reason))
    except (DataError, OSError) as exc:
        report.error = str(exc)
        return []
    if not records:
        report.error = f"{name}: has no ratings."
        return []
    is_ftchat = sum(r.get("format") == RATINGS_FORMAT for _, r in records) * 2 > len(records)
    if not is_ftchat and not any("winner" in r and "model_a" in r for _, r in records):
        fields = sorted({key for _, r in records[:20] for key in r})[:12]
        hint = ""
        if {"chosen", "rejected"} <= set(fields) or {"completion", "label"} <= set(fields):
            hint = " This looks like a training export: it has no model names, so train on it instead of importing."
        report.error = (f"{name}: not a battle file (model_a, model_b, winner, conversation_a, conversation_b) nor "
                        f"an ftchat ratings export; rows have fields {fields}.{hint}")
        return []
    report.format = "ftchat" if is_ftchat else "battle"
    parse = ftchat_row if is_ftchat else battle_row
    rows = []
    for line, record in records:
        try:
            values = parse(record)
        except RowProblem as problem:
            report.problems.append(ImportProblem(line, problem.field, problem.reason))
            continue
        except FeedbackError as exc:
            report.problems.append(ImportProblem(line, str(exc).split(":")[0], str(exc)))
            continue
        values.update(source="import", origin=f"{name}:{line}", import_key=import_key(record))
        rows.append(values)
    report.problems.sort(key=lambda p: p.line)
    return rows


def _text(record: dict, key: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowProblem(key, f"missing field '{key}'")
        return None
    if not isinstance(value, str):
        raise RowProblem(key, f"'{key}' must be text, found {type(value).__name__}")
    return value.strip()


def _split_reply(messages, key: str) -> tuple[list[dict], str]:
    """(conversation up to the prompt, the last assistant reply) of an OpenAI message list."""
    if not isinstance(messages, list) or not messages:
        raise RowProblem(key, f"'{key}' must be a list of messages ending with the model's reply")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowProblem(key, f"'{key}'[{i}] is not a message object")
        if isinstance(message.get("content"), list):  # OpenAI content parts: keep the text parts
            parts = [p.get("text", "") for p in message["content"] if isinstance(p, dict)]
            messages[i] = {**message, "content": "".join(parts)}
    last = messages[-1]
    if last.get("role") != "assistant":
        raise RowProblem(key, f"'{key}' must end with the model's (assistant) reply, ends with {last.get('role')!r}")
    try:
        conversation = check_conversation(messages[:-1], key)
    except FeedbackError as exc:
        raise RowProblem(key, str(exc)) from None
    return conversation, str(last.get("content") or "")


def _time(record: dict, key: str) -> float:
    value = record.get(key)
    if value is None:
        return time.time()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowProblem(key, f"'{key}' must be a unix time in seconds, found {value!r}")
    return float(value)


def battle_row(record: dict) -> dict:
    model_a, model_b = _text(record, "model_a"), _text(record, "model_b")
    winner = record.get("winner")
    if winner not in BATTLE_WINNERS:
        raise RowProblem("winner", f"winner {winner!r} is not one of {', '.join(BATTLE_WINNERS)}")
    conversation, reply_a = _split_reply(record.get("conversation_a"), "conversation_a")
    _, reply_b = _split_reply(record.get("conversation_b"), "conversation_b")
    judge = record.get("judge")
    return {
        "time": _time(record, "tstamp"), "kind": "vote",
        "conversation": json.dumps(conversation, ensure_ascii=False), "prompt": prompt_text(conversation),
        "model_a": model_a, "model_b": model_b, "reply_a": reply_a, "reply_b": reply_b,
        "winner": BATTLE_WINNERS[winner], "rater": str(judge) if judge not in (None, "") else None,
        "anonymous": int(bool(record.get("anony", False))),
    }


def ftchat_row(record: dict) -> dict:
    kind = record.get("kind")
    if kind not in RATING_KINDS:
        raise RowProblem("kind", f"kind {kind!r} is not one of {', '.join(RATING_KINDS)}")
    try:
        conversation = check_conversation(record.get("conversation"))
    except FeedbackError as exc:
        raise RowProblem("conversation", str(exc)) from None
    values = {
        "time": _time(record, "time"), "kind": kind,
        "conversation": json.dumps(conversation, ensure_ascii=False), "prompt": prompt_text(conversation),
        "model_a": _text(record, "model_a"), "hash_a": _text(record, "hash_a", required=False),
        "reply_a": record.get("reply_a") if isinstance(record.get("reply_a"), str) else _text(record, "reply_a"),
        "rater": _text(record, "rater", required=False), "anonymous": int(bool(record.get("anonymous", False))),
        "settings": json.dumps(record["settings"]) if record.get("settings") is not None else None,
    }
    if kind == "vote":
        if record.get("winner") not in WINNERS:
            raise RowProblem("winner", f"winner {record.get('winner')!r} is not one of {', '.join(WINNERS)}")
        values.update(model_b=_text(record, "model_b"), hash_b=_text(record, "hash_b", required=False),
                      reply_b=record.get("reply_b") if isinstance(record.get("reply_b"), str)
                      else _text(record, "reply_b"), winner=record["winner"])
    elif kind == "thumb":
        if record.get("thumb") not in (1, -1):
            raise RowProblem("thumb", f"thumb {record.get('thumb')!r} is not 1 (up) or -1 (down)")
        values["thumb"] = record["thumb"]
    else:
        values["edit"] = _text(record, "edit")
    if kind != "vote" and record.get("side") is not None:
        if record["side"] not in SIDES:
            raise RowProblem("side", f"side {record['side']!r} is not 'a' or 'b'")
        values["side"] = record["side"]
    return values


def ratings_record(row: dict) -> dict:
    """One stored rating as a line of ftchat's ratings export (what ftchat_row reads back)."""
    keep = ("time", "kind", "conversation", "model_a", "model_b", "hash_a", "hash_b", "reply_a", "reply_b", "winner",
            "thumb", "edit", "side", "settings", "rater", "anonymous")
    return {"format": RATINGS_FORMAT, **{k: row.get(k) for k in keep if row.get(k) is not None}}
