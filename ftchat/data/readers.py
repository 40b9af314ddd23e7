"""Bytes on disk -> text -> records, each with the line number a user would look for.

Errors about the whole file raise DataError (one sentence naming the file); a row that cannot be
read is returned as Skipped so the rest of the file stays usable. Nothing here runs code from a
file: pickles and other binaries are recognized and refused.
"""

from __future__ import annotations

import csv
import io
import json
import os

from .shapes import DataError, Skipped

KINDS = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "document",
    ".md": "document",
    ".pdf": "pdf",
}
EXTENSION_LIST = ".jsonl, .json, .csv, .txt, .md or .pdf"

MAGIC = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive (or .xlsx/.docx)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x7fELF", "a program"),
]
# A pickle starts with PROTO (0x80) and a protocol number; it is never unpickled here.
PICKLE_PROTOCOLS = {2, 3, 4, 5}

# Keys that mean a top-level JSON object is itself one example, not a {"data": [...]} wrapper.
ROW_KEYS = {"messages", "conversations", "chosen", "rejected", "prompt", "completion",
            "instruction", "output", "text"}


def display_name(path: str) -> str:
    return os.path.basename(str(path)) or str(path)


def file_kind(path: str) -> str:
    """One of jsonl/json/csv/document/pdf, from the extension; DataError for anything else."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in KINDS:
        what = f"file type '{ext}'" if ext else "file without an extension"
        raise DataError(f"{display_name(path)}: unsupported {what}; use {EXTENSION_LIST}.")
    return KINDS[ext]


def read_bytes(path: str) -> bytes:
    name = display_name(path)
    if os.path.isdir(path):
        raise DataError(f"{name}: is a folder, not a file; pass the training files inside it.")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{name}: file not found; check the path.") from None
    except OSError as e:
        raise DataError(f"{name}: cannot be read ({e.strerror}); check its permissions.") from None
    if not data.strip():
        raise DataError(f"{name}: the file is empty; add at least one training example.")
    return data


def binary_kind(data: bytes) -> str | None:
    for magic, what in MAGIC:
        if data.startswith(magic):
            return what
    if len(data) > 1 and data[0] == 0x80 and data[1] in PICKLE_PROTOCOLS:
        return "a Python pickle (pickles are never loaded)"
    return None


def utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when NUL bytes sit in every other position, as in UTF-16 text."""
    sample = data[:4096]
    half = len(sample) // 2
    if half < 2:
        return None
    nul_even = sum(1 for b in sample[0::2] if b == 0)
    nul_odd = sum(1 for b in sample[1::2] if b == 0)
    if nul_odd > 0.4 * half and nul_even < 0.05 * half:
        return "utf-16-le"
    if nul_even > 0.4 * half and nul_odd < 0.05 * half:
        return "utf-16-be"
    return None


def looks_binary(data: bytes) -> bool:
    sample = data[:4096]
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return b"\x00" in sample or control > 0.05 * len(sample)


def decode(data: bytes, name: str) -> str:
    """UTF-8 (with or without BOM) or UTF-16 (BOM, or detected from NUL bytes) to str."""
    if data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        what = binary_kind(data)
        if what:
            raise DataError(f"{name}: is {what}, not text; upload a {EXTENSION_LIST} training file.")
        encoding = utf16_without_bom(data) or "utf-8"
        if encoding == "utf-8" and b"\x00" in data[:4096]:
            raise DataError(f"{name}: is a binary file, not text; upload a {EXTENSION_LIST} training file.")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        if looks_binary(data):
            raise DataError(f"{name}: is a binary file, not text; upload a {EXTENSION_LIST} training file.") from None
        bad = data[e.start]
        raise DataError(
            f"{name}: is not UTF-8 text (byte 0x{bad:02x} at offset {e.start}); re-save it as UTF-8."
        ) from None
    if not text.strip():
        raise DataError(f"{name}: the file is empty; add at least one training example.")
    return text


def read_text(path: str) -> str:
    return decode(read_bytes(path), display_name(path))


def jsonl_records(text: str, name: str) -> tuple[list[tuple[int, dict]], list[Skipped]]:
    """One JSON object per line; line numbers are 1-based. A whole-file JSON array is accepted too."""
    records, skipped = [], []
    first_problem = None
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines() breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            skipped.append(Skipped(number, f"not JSON ({where_in_line(e)})"))
            first_problem = first_problem or f"line {number} is not JSON ({e.msg}). Each line must be one JSON object."
            continue
        if not isinstance(value, dict):
            skipped.append(Skipped(number, f"not a JSON object (found {json_type(value)})"))
            first_problem = first_problem or (
                f"line {number} is {json_type(value)}, not a JSON object; each line must be one object "
                'like {"messages": [...]}.'
            )
            continue
        records.append((number, value))
    if records:
        return records, skipped
    # Nothing line-by-line: maybe a pretty-printed JSON document saved as .jsonl.
    try:
        return json_records(text, name)
    except DataError:
        raise DataError(f"{name}: {first_problem}") from None


def json_records(text: str, name: str) -> tuple[list[tuple[int, dict]], list[Skipped]]:
    """A JSON array of objects (line = index + 1), an object wrapping one list, or one object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON values: probably JSON Lines named .json
            records, skipped = jsonl_records_strict(text)
            if records:
                return records, skipped
        raise DataError(
            f"{name}: is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            "a .json file must hold one array of objects."
        ) from None
    if isinstance(value, dict):
        if ROW_KEYS & value.keys():
            return [(1, value)], []
        lists = [key for key, item in value.items() if isinstance(item, list)]
        if len(lists) != 1:
            raise DataError(
                f"{name}: expected an array of objects or an object with one list like "
                f'{{"data": [...]}}, but found keys {sorted(value)[:8]}.'
            )
        value = value[lists[0]]
    if not isinstance(value, list):
        raise DataError(f"{name}: holds {json_type(value)}; a .json file must hold an array of objects.")
    records, skipped = [], []
    for index, item in enumerate(value, start=1):
        if isinstance(item, dict):
            records.append((index, item))
        else:
            skipped.append(Skipped(index, f"not a JSON object (found {json_type(item)})"))
    if not records:
        if not value:
            raise DataError(f"{name}: the array is empty; add at least one training example.")
        raise DataError(f"{name}: item 1 is {json_type(value[0])}, but every item must be a JSON object.")
    return records, skipped


def jsonl_records_strict(text: str) -> tuple[list[tuple[int, dict]], list[Skipped]]:
    records, skipped = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                skipped.append(Skipped(number, f"not JSON ({where_in_line(e)})"))
                continue
            if isinstance(value, dict):
                records.append((number, value))
            else:
                skipped.append(Skipped(number, f"not a JSON object (found {json_type(value)})"))
    return records, skipped


def where_in_line(e: json.JSONDecodeError) -> str:
    # Some messages already end in "at" ("Unterminated string starting at").
    return f"{e.msg} column {e.colno}" if e.msg.endswith(" at") else f"{e.msg} at column {e.colno}"


def json_type(value) -> str:
    names = {str: "a string", list: "an array", int: "a number", float: "a number",
             bool: "true/false", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def csv_records(text: str, name: str, path: str = "") -> tuple[list[str], list[tuple[int, dict]], list[Skipped]]:
    """Header and rows of a CSV/TSV; a row's line counts the header as line 1."""
    first_line = text.split("\n", 1)[0]
    if path.lower().endswith(".tsv"):
        delimiter = "\t"
    else:
        delimiter = max([",", ";", "\t"], key=first_line.count)
    csv.field_size_limit(64 * 1024 * 1024)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [cell.strip() for cell in next(reader)]
    except (StopIteration, csv.Error) as e:
        raise DataError(f"{name}: has no readable header row ({e}); the first line must name the columns.") from None
    if not any(header):
        raise DataError(f"{name}: the header row is empty; the first line must name the columns.")
    records, skipped = [], []
    number = 1
    while True:
        number += 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            skipped.append(Skipped(number, f"not valid CSV ({e})"))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        extra = cells[len(header):]
        if any(cell.strip() for cell in extra):
            skipped.append(Skipped(number, f"has {len(cells)} cells but the header names {len(header)} columns"))
            continue
        cells = cells[: len(header)] + [""] * (len(header) - len(cells))
        records.append((number, dict(zip(header, cells))))
    if not records and not skipped:
        raise DataError(f"{name}: has a header but no rows; add at least one training example.")
    return header, records, skipped
