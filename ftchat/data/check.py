"""`ftchat data check`: a per-file report, token-length statistics and readable previews."""

from __future__ import annotations

import json
import math
import random
import sys

from .documents import CHARS_PER_TOKEN
from .llamafactory import is_registry, split_registry
from .load import read_rows
from .readers import display_name
from .shapes import DataError, LoadedFile
from .tokens import plain_text, row_chars, row_tokens

SHOW_SKIPPED = 20
PREVIEW_CHARS = 500
PREVIEW_ROWS = 5
LENGTH_SAMPLE = 1000  # token statistics of a report come from at most this many examples


def summarize_file(path, tokenizer=None, max_tokens: int = 2048, chunk_tokens: int = 512,
                   keep_rows: int = PREVIEW_ROWS, sample: int = LENGTH_SAMPLE, registry: dict | None = None):
    """(report, token lengths) for one file, in memory bounded by keep_rows and sample, whatever the
    file's size: every row is read and checked, the first keep_rows are kept for a preview, and the
    lengths are those of a uniform sample of at most `sample` examples (all of them when fewer)."""
    report = LoadedFile(file=str(path))
    chosen, draw = [], random.Random(0)
    for seen, row in enumerate(read_rows(path, report, tokenizer, max_tokens, chunk_tokens, registry)):
        if len(report.rows) < keep_rows:
            report.rows.append(row)
        if sample == 0:
            continue
        if len(chosen) < sample:  # reservoir sampling: every example equally likely to be measured
            chosen.append(row)
        else:
            slot = draw.randrange(seen + 1)
            if slot < sample:
                chosen[slot] = row
    lengths = token_lengths(chosen, report.shape, tokenizer) if report.ok else []
    return report, lengths


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


def describe(report, tokenizer, lengths=None) -> str:
    """The readable report for one loaded file (lengths: token lengths of its examples, or a sample)."""
    name = display_name(report.file)
    lines = [f"{name}: {'ok' if report.ok else 'NOT USABLE'}"]
    if report.format:
        lines.append(f"  format: {report.format}   shape: {report.shape}   examples: {report.examples}")
    if report.skipped:
        lines.append(f"  skipped {report.skipped_count} row(s):")
        lines += [f"    {where(s)}: {s.reason}" for s in report.skipped[:SHOW_SKIPPED]]
        if report.skipped_count > SHOW_SKIPPED:
            lines.append(f"    … and {report.skipped_count - SHOW_SKIPPED} more")
    if report.error:
        lines.append(f"  error: {report.error}")
    lines += [f"  warning: {w}" for w in report.warnings]
    if report.ok:
        if tokenizer is None:
            lines.append("  tokens per example: skipped (no tokenizer; pass --base NAME to count tokens)")
        else:
            if lengths is None:
                lengths = token_lengths(report.rows, report.shape, tokenizer)
            stats = length_stats(lengths)
            sampled = f" (a sample of {len(lengths)})" if len(lengths) < report.examples else ""
            lines.append(f"  tokens per example{sampled}: " + " / ".join(f"{k} {v}" for k, v in stats.items()))
    return "\n".join(lines)


def where(skipped) -> str:
    """'line 12 (record 3)': where a skipped row is; the record number only when it differs from the line."""
    if skipped.record is None or skipped.record == skipped.line:
        return f"line {skipped.line}"
    return f"line {skipped.line} (record {skipped.record})"


def check_files(paths, as_json: bool, tokenizer=None, max_tokens: int = 2048, out=None) -> int:
    """Print a report for each file (JSON Lines with as_json); 0 when every file is usable, else 1.
    Files are read as a stream, one at a time: memory stays bounded whatever their size."""
    out = out or sys.stdout
    everything_ok = bool(paths)
    try:
        registry, paths = split_registry(paths)  # a dataset_info.json given with its files maps their columns
    except DataError as e:
        registry, paths, everything_ok = None, [p for p in paths if not is_registry(p)], False
        print(json.dumps({"file": str(e).split(":")[0], "ok": False, "error": str(e)}) if as_json else str(e),
              file=out)
    for path in paths:
        report, lengths = summarize_file(path, tokenizer, max_tokens, sample=0 if as_json else LENGTH_SAMPLE,
                                         registry=registry)
        everything_ok = everything_ok and report.ok
        if as_json:
            print(json.dumps(report.to_json(), ensure_ascii=False), file=out, flush=True)
        else:
            print(describe(report, tokenizer, lengths), file=out, flush=True)
    return 0 if everything_ok else 1
