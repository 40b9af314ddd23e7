"""`ftchat data check`: a per-file report, token-length statistics and readable previews."""

from __future__ import annotations

import json
import math
import sys

from .documents import CHARS_PER_TOKEN
from .load import load_file
from .readers import display_name
from .tokens import plain_text, row_chars, row_tokens

SHOW_SKIPPED = 20
PREVIEW_CHARS = 500


def token_lengths(rows: list[dict], shape: str, tokenizer) -> list[int]:
    """Tokens per example (chat template for conversations, plain tokens for text; the longer side
    of a preference pair). Without a tokenizer: an estimate at 4 characters per token."""
    if tokenizer is None:
        return [math.ceil(row_chars(row, shape) / CHARS_PER_TOKEN) for row in rows]
    return [row_tokens(row, shape, tokenizer) for row in rows]


def length_stats(lengths: list[int]) -> dict:
    """min / mean / p50 / p95 / max of a list of lengths (nearest-rank percentiles)."""
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def rank(p):
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {"min": ordered[0], "mean": round(sum(ordered) / len(ordered), 1),
            "p50": rank(0.50), "p95": rank(0.95), "max": ordered[-1]}


def clip(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def preview_rows(rows: list[dict], shape: str, n: int = 5) -> list[dict]:
    """The first n rows as flat dicts of strings, conversations rendered as "role: content" lines."""
    preview = []
    for row in rows[:n]:
        if shape == "messages":
            flat = {"conversation": plain_text(row["messages"]).rstrip("\n")}
        elif shape == "prompt_completion":
            flat = {"prompt": row["prompt"], "completion": row["completion"]}
        elif shape == "preference":
            flat = {"prompt": plain_text(row["prompt"]).rstrip("\n"),
                    "chosen": row["chosen"][0]["content"], "rejected": row["rejected"][0]["content"]}
        elif shape == "unpaired_preference":
            flat = {"prompt": plain_text(row["prompt"]).rstrip("\n"),
                    "completion": row["completion"][0]["content"], "label": "good" if row["label"] else "bad"}
        elif shape == "prompt_only":
            flat = {"prompt": plain_text(row["prompt"]).rstrip("\n")}
        else:
            flat = {"text": row["text"]}
        preview.append({key: clip(value) for key, value in flat.items()})
    return preview


def describe(report, tokenizer) -> str:
    """The readable report for one loaded file."""
    name = display_name(report.file)
    lines = [f"{name}: {'ok' if report.ok else 'NOT USABLE'}"]
    if report.format:
        lines.append(f"  format: {report.format}   shape: {report.shape}   examples: {report.examples}")
    if report.skipped:
        lines.append(f"  skipped {len(report.skipped)} row(s):")
        lines += [f"    line {s.line}: {s.reason}" for s in report.skipped[:SHOW_SKIPPED]]
        if len(report.skipped) > SHOW_SKIPPED:
            lines.append(f"    … and {len(report.skipped) - SHOW_SKIPPED} more")
    if report.error:
        lines.append(f"  error: {report.error}")
    if report.ok:
        if tokenizer is None:
            lines.append("  tokens per example: skipped (no tokenizer; pass --base NAME to count tokens)")
        else:
            stats = length_stats(token_lengths(report.rows, report.shape, tokenizer))
            lines.append("  tokens per example: " + " / ".join(f"{k} {v}" for k, v in stats.items()))
    return "\n".join(lines)


def check_files(paths, as_json: bool, tokenizer=None, max_tokens: int = 2048, out=None) -> int:
    """Print a report for each file (JSON Lines with as_json); 0 when every file is usable, else 1."""
    out = out or sys.stdout
    reports = [load_file(path, tokenizer, max_tokens) for path in paths]
    for report in reports:
        if as_json:
            print(json.dumps(report.to_json(), ensure_ascii=False), file=out)
        else:
            print(describe(report, tokenizer), file=out)
    return 0 if reports and all(r.ok for r in reports) else 1
