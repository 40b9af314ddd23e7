"""Load training files: detect the format, normalize every row, skip and explain the bad ones."""

from __future__ import annotations

import os

from . import readers
from .documents import chunk_text, pdf_text
from .formats import SHAPE_OF, csv_plan, detect_format, normalizer_for, to_messages
from .shapes import DataError, LoadedFile, RowError, Skipped
from .tokens import row_chars, row_tokens

CHARS_PER_TOKEN_LIMIT = 8  # without a tokenizer a row is too long past max_tokens * 8 characters


def load_file(path, tokenizer=None, max_tokens: int = 2048, chunk_tokens: int = 512) -> LoadedFile:
    """Read one file into normalized rows. Never raises for bad input: problems land in `error`
    (the whole file) or `skipped` (one row each)."""
    report = LoadedFile(file=str(path))
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
            report.rows = [{"text": chunk} for chunk in chunk_text(text, tokenizer, chunk_tokens)]
            if not report.rows:
                report.error = f"{name}: has no text; add some prose to train on."
            return report
        text = readers.read_text(path)
        if kind == "csv":
            header, records, skipped = readers.csv_records(text, name, str(path))
            report.format = "csv"
            report.shape, normalize = csv_plan(header, name)
        else:
            read = readers.jsonl_records if kind == "jsonl" else readers.json_records
            records, skipped = read(text, name)
            report.format = detect_format(records, name)
            report.shape, normalize = SHAPE_OF[report.format], normalizer_for(report.format)
        report.skipped = skipped
        for line, record in records:
            try:
                row = normalize(record)
                report.rows.extend(fit_length(row, report.shape, tokenizer, max_tokens, chunk_tokens))
            except RowError as e:
                report.skipped.append(Skipped(line, str(e)))
            except (TypeError, AttributeError, KeyError, ValueError) as e:  # odd value types in a row
                report.skipped.append(Skipped(line, f"could not be read ({type(e).__name__}: {e})"))
        report.skipped.sort(key=lambda s: s.line)
        if not report.rows:
            first = report.skipped[0]
            report.error = (f"{name}: all {len(report.skipped)} rows were skipped: see skipped "
                            f"(first, line {first.line}: {first.reason}).")
    except DataError as e:
        report.error = str(e)
    except (RecursionError, MemoryError):
        report.error = f"{name}: is nested too deeply or too large to read; split it into smaller files."
    return report


def fit_length(row: dict, shape: str, tokenizer, max_tokens: int, chunk_tokens: int) -> list[dict]:
    """[row] when it fits in max_tokens; a long text row is cut into chunks, any other raises RowError."""
    if tokenizer is not None:
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
    reports = [load_file(p, tokenizer, max_tokens, chunk_tokens) for p in paths]
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
    return datasets.Dataset.from_list(rows), shape, reports
