"""Load training files: detect the format, normalize every row, skip and explain the bad ones."""

from __future__ import annotations

import itertools
import os

from . import llamafactory, readers
from .documents import chunk_text, pdf_text
from .formats import (
    SHAPE_OF,
    TOOL_SUPPORT,
    VOTE_ROWS,
    csv_plan,
    detect_format,
    normalizer_for,
    placeholders,
    to_messages,
)
from .shapes import DataError, LoadedFile, RowError, Skipped
from .tokens import row_chars, row_tokens, token_bound, tool_support

CHARS_PER_TOKEN_LIMIT = 8  # without a tokenizer a row is too long past max_tokens * 8 characters


def load_file(path, tokenizer=None, max_tokens: int = 2048, chunk_tokens: int = 512,
              keep_rows: int | None = None, registry: dict | None = None) -> LoadedFile:
    """Read one file into normalized rows. Never raises for bad input: problems land in `error`
    (the whole file) or `skipped` (one row each). With keep_rows, only that many rows are kept
    (all are still read, checked and counted). `registry`: LLaMA-Factory dataset_info.json entries, used as
    a column map when one names this file."""
    report = LoadedFile(file=str(path))
    for row in read_rows(path, report, tokenizer, max_tokens, chunk_tokens, registry):
        if keep_rows is None or len(report.rows) < keep_rows:
            report.rows.append(row)
    return report


def read_rows(path, report: LoadedFile, tokenizer=None, max_tokens: int = 2048, chunk_tokens: int = 512,
              registry: dict | None = None):
    """Yield the normalized rows of one file, a row at a time, filling in `report` (format, shape,
    counts, skipped rows, warnings, error) as it goes. Never raises for bad input."""
    name = readers.display_name(path)
    chunk_tokens = min(chunk_tokens, max_tokens)
    try:
        kind = readers.file_kind(path)
        if kind in ("document", "pdf"):
            if kind == "pdf":
                text = pdf_text(readers.read_bytes(path), name)
            else:
                text = readers.read_text(path)
            report.format, report.shape = kind, "text"
            for chunk in chunk_text(text, tokenizer, chunk_tokens):
                report.count += 1
                yield {"text": chunk}
            if not report.count:
                report.error = f"{name}: has no text; add some prose to train on."
            return
        if kind == "csv":
            header, records = readers.csv_records(path, name)
            report.format = "csv"
            report.shape, normalize = csv_plan(header, name)
        else:
            if kind in ("parquet", "arrow", "hf_folder"):
                items = readers.table_records(path, kind, name)
            else:
                items = (readers.jsonl_records if kind == "jsonl" else readers.json_records)(path, name)
            entry = llamafactory.entry_for(registry, path)
            if entry is not None:
                items = llamafactory.column_map(entry[1])(items)
            head, found = [], 0
            for item in items:
                head.append(item)
                found += isinstance(item, tuple)
                if found >= VOTE_ROWS:
                    break
            records = [item for item in head if isinstance(item, tuple)]
            if not records:
                for item in head:
                    report.skip(item)
                raise DataError(f"{name}: no row is a JSON object" if not head else all_skipped(name, report))
            report.format = fmt = detect_format(records, name)
            if entry is not None:
                report.format = f"llamafactory:{entry[0]} ({report.format})"
            report.shape, normalize = SHAPE_OF[fmt], normalizer_for(fmt)
            records = itertools.chain(head, items)
        with_placeholders, names = 0, set()
        support = tool_support(tokenizer)
        for item in records:
            if isinstance(item, Skipped):
                report.skip(item)
                continue
            line, number, record = item
            token = TOOL_SUPPORT.set(support)
            try:
                row = normalize(record)
                rows = fit_length(row, report.shape, tokenizer, max_tokens, chunk_tokens)
            except RowError as e:
                report.skip(Skipped(line, str(e), number))
                continue
            except (TypeError, AttributeError, KeyError, ValueError) as e:  # odd value types in a row
                report.skip(Skipped(line, f"could not be read ({type(e).__name__}: {e})", number))
                continue
            finally:
                TOOL_SUPPORT.reset(token)
            found = placeholders(row)
            if found:
                with_placeholders += 1
                names |= found
            for row in rows:
                report.count += 1
                yield row
        if with_placeholders:
            listed = ", ".join("{{" + n + "}}" for n in sorted(names)[:6])
            report.warnings.append(
                f"{with_placeholders} of {report.count} examples contain template placeholders ({listed}); "
                "replace them with real values before training (LLaMA-Factory's identity.json expects "
                "your model's name and author), or the model learns the braces.")
        report.skipped.sort(key=lambda s: s.line)
        if not report.count:
            report.error = all_skipped(name, report)
    except DataError as e:
        report.error = str(e)
    except (RecursionError, MemoryError):
        report.error = f"{name}: is nested too deeply or too large to read; split it into smaller files."


def all_skipped(name: str, report: LoadedFile) -> str:
    if not report.skipped:
        return f"{name}: has no rows; add at least one training example."
    first = min(report.skipped, key=lambda s: s.line)
    return (f"{name}: all {report.skipped_count} rows were skipped: see skipped "
            f"(first, line {first.line}: {first.reason}).")


def fit_length(row: dict, shape: str, tokenizer, max_tokens: int, chunk_tokens: int) -> list[dict]:
    """[row] when it fits in max_tokens; a long text row is cut into chunks, any other raises RowError."""
    if tokenizer is not None:
        if token_bound(row, shape, tokenizer) <= max_tokens:  # surely fits: skip the slow exact count
            return [row]
        size, limit, unit = row_tokens(row, shape, tokenizer), max_tokens, "tokens"
    else:
        size, limit, unit = row_chars(row, shape), max_tokens * CHARS_PER_TOKEN_LIMIT, "characters"
    if size <= limit:
        return [row]
    if shape == "text":
        return [{"text": chunk} for chunk in chunk_text(row["text"], tokenizer, chunk_tokens)]
    hint = "" if tokenizer is not None else f" (max_tokens {max_tokens} x {CHARS_PER_TOKEN_LIMIT} without a tokenizer)"
    raise RowError(f"too long: {size} {unit} > {limit}{hint}")


def load_dataset(paths, tokenizer=None, max_tokens: int = 2048, chunk_tokens: int = 512):
    """(datasets.Dataset, shape, per-file reports) for files that share one shape.

    prompt_completion rows come back as `messages` so SFT always sees conversations. Raises
    DataError, with the reports on `.reports`, when a file is unusable or the shapes conflict."""
    import datasets

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise DataError(f"no training files given; pass at least one {readers.EXTENSION_LIST} file.")
    registry, paths = llamafactory.split_registry(paths)
    reports = [load_file(p, tokenizer, max_tokens, chunk_tokens, registry=registry) for p in paths]
    failed = [r for r in reports if not r.ok]
    if failed:
        if len(failed) == 1:
            error = DataError(failed[0].error)
        else:
            reasons = "; ".join(r.error.rstrip(".") for r in failed)
            error = DataError(f"{len(failed)} of {len(reports)} files cannot be used: {reasons}.")
        error.reports = reports
        raise error
    shapes = {r.file: "messages" if r.shape == "prompt_completion" else r.shape for r in reports}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{readers.display_name(f)} is {s}" for f, s in shapes.items())
        error = DataError(f"the files have different shapes ({listing}); train each shape in its own run.")
        error.reports = reports
        raise error
    shape = next(iter(shapes.values()))
    rows = []
    for r in reports:
        if r.shape == "prompt_completion":
            rows.extend(to_messages(row) for row in r.rows)
        else:
            rows.extend(r.rows)
    if any("tools" in row or any("tool_calls" in m for m in row.get("messages", ())) for row in rows):
        # Tool calls differ per row: stored as JSON, each comes back exactly as written (as Arrow structs,
        # every call would gain every other call's argument names, set to None).
        for row in rows:
            row.setdefault("tools", None)
        features = datasets.Features({"messages": datasets.List(datasets.Json()), "tools": datasets.Json()})
        return datasets.Dataset.from_list(rows, features=features), shape, reports
    return datasets.Dataset.from_list(rows), shape, reports
