"""Bytes on disk -> text -> records, each with the line number a user would look for.

Errors about the whole file raise DataError (one sentence naming the file); a row that cannot be
read is returned as Skipped so the rest of the file stays usable. Nothing here runs code from a
file: pickles and other binaries are recognized and refused.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
import re
import zlib

from .shapes import DataError, Skipped

READERS_BY_EXTENSION = {
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json": "json",
    ".json.gz": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "document",
    ".md": "document",
    ".pdf": "pdf",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
EXTENSION_LIST = ".jsonl, .json, .csv, .txt, .md, .pdf, .parquet, .arrow (or .jsonl.gz / .json.gz)"
MAX_LINE_BYTES = 32 * 1024 * 1024  # one JSONL line longer than this is skipped, never held in memory whole
# a .gz upload may not decompress to more than this: ten times the default 50 MB upload (JSONL text compresses
# 3-6x), while a 14.6 MB bomb of 4 GiB kept a core busy for 5 minutes
MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024
MAX_TEXT_BYTES = MAX_DECOMPRESSED_BYTES  # a whole .json.gz is read into memory: the same bound
NO_RECORD_LINES = 1000  # this many lines without one JSON object: read the .jsonl as one JSON document
MAGIC = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive (or .xlsx/.docx)"),
    (b"\x1f\x8b", "a gzip archive (name it .jsonl.gz or .json.gz if it holds one JSON file)"),
    (b"PAR1", "a Parquet file (name it .parquet)"),
    (b"ARROW1", "an Arrow file (name it .arrow)"),
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


def extension(path) -> str:
    """The file's extension, lower case; two parts for compressed files ('.jsonl.gz')."""
    name = display_name(path).lower()
    stem, ext = os.path.splitext(name)
    if ext == ".gz":
        ext = os.path.splitext(stem)[1] + ext
    return ext


def file_kind(path: str) -> str:
    """One of jsonl/json/csv/document/pdf/parquet/arrow, from the extension, or hf_folder for a folder
    written by datasets' save_to_disk; DataError for anything else."""
    if os.path.isdir(path):
        if hf_folder_files(path) is not None:
            return "hf_folder"
        raise DataError(f"{display_name(path)}: is a folder, not a file; pass the training files inside it "
                        "(or a folder written by datasets' save_to_disk).")
    ext = extension(path)
    if ext not in READERS_BY_EXTENSION:
        what = f"file type '{ext}'" if ext else "file without an extension"
        raise DataError(f"{display_name(path)}: unsupported {what}; use {EXTENSION_LIST}.")
    return READERS_BY_EXTENSION[ext]


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


class BoundedGzip(gzip.GzipFile):
    """A gzip file that raises DataError once more than MAX_DECOMPRESSED_BYTES have been read from it."""

    def __init__(self, path, name: str):
        super().__init__(path, "rb")
        self.display_name = name

    def _check(self, data):
        if self.tell() > MAX_DECOMPRESSED_BYTES:
            raise DataError(f"{self.display_name}: decompresses to more than {MAX_DECOMPRESSED_BYTES // 2**20} MB; "
                            "split it into smaller files.")
        return data

    def read(self, size=-1):
        if size is None or size < 0:  # a whole read stops one byte past the limit
            size = MAX_DECOMPRESSED_BYTES + 1 - self.tell()
        return self._check(super().read(size))

    def read1(self, size=-1):
        return self._check(super().read1(size))

    def readline(self, size=-1):
        return self._check(super().readline(size))


def open_binary(path):
    """The file's bytes as a stream; .gz files are decompressed on the fly."""
    name = display_name(path)
    try:
        if extension(path).endswith(".gz"):
            with open(path, "rb") as f:
                if f.read(2) != b"\x1f\x8b":
                    raise DataError(f"{name}: is named .gz but is not gzip-compressed; remove the .gz from its name.")
            return BoundedGzip(path, name)
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{name}: file not found; check the path.") from None
    except OSError as e:
        raise DataError(f"{name}: cannot be read ({e.strerror}); check its permissions.") from None


def read_text(path: str) -> str:
    """The whole file as text (decompressed when .gz, at most MAX_TEXT_BYTES)."""
    if not extension(path).endswith(".gz"):
        return decode(read_bytes(path), display_name(path))
    name = display_name(path)
    with open_binary(path) as f:
        try:
            data = f.read(MAX_TEXT_BYTES + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{name}: is a damaged gzip file ({e}); compress it again.") from None
    if len(data) > MAX_TEXT_BYTES:
        raise DataError(f"{name}: decompresses to more than {MAX_TEXT_BYTES // 2**20} MB; split it into smaller files.")
    if not data.strip():
        raise DataError(f"{name}: the file is empty; add at least one training example.")
    return decode(data, name)


def text_lines(path, name: str):
    """(line number, text) for every line of a UTF-8 (or UTF-16) text file, read a line at a time.

    Lines split at "\n" only: JSON strings may hold U+2028, which str.splitlines() breaks on. A line
    over MAX_LINE_BYTES is yielded as None (the caller skips it) without being kept in memory."""
    with open_binary(path) as f:
        try:
            head = f.read(4096)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{name}: is a damaged gzip file ({e}); compress it again.") from None
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or utf16_without_bom(head):
            lines = read_text(path).split("\n")  # UTF-16 is rare and never huge: decode it whole
            for number, line in enumerate(lines, start=1):
                yield number, line + "\n" if number < len(lines) else line
            return
        if not head.startswith(b"\xef\xbb\xbf"):
            what = binary_kind(head)
            if what:
                raise DataError(f"{name}: is {what}, not text; upload a {EXTENSION_LIST} training file.")
            if b"\x00" in head:
                raise DataError(f"{name}: is a binary file, not text; upload a {EXTENSION_LIST} training file.")
        f.seek(0)
        stream = f
        offset = 0
        number = 0
        while True:
            try:
                raw = stream.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError, zlib.error) as e:
                raise DataError(f"{name}: is a damaged gzip file ({e}); compress it again.") from None
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # drop the rest of the over-long line
                    offset += len(raw)
                    raw = stream.readline(MAX_LINE_BYTES)
                offset += len(raw)
                yield number, None
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw, offset = raw[3:], 3
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if looks_binary(raw):
                    raise DataError(
                        f"{name}: is a binary file, not text; upload a {EXTENSION_LIST} training file.") from None
                raise DataError(f"{name}: is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                                f"{offset + e.start}); re-save it as UTF-8.") from None
            offset += len(raw)
            yield number, line


def jsonl_records(path, name: str):
    """(line, record number, object) per JSON line, or Skipped for a line that is not one object.

    A file with no JSON object in its first lines is read as one JSON document (a pretty-printed
    .json saved as .jsonl)."""
    pending, first_problem, number = [], None, 0
    found = False
    for line_number, line in text_lines(path, name):
        if line is None:
            number += 1
            item = Skipped(line_number, f"the line is longer than {MAX_LINE_BYTES:,} bytes; shorten or split this example",
                           number)
        else:
            line = line.strip()
            if not line:
                continue
            number += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                item = Skipped(line_number, f"not JSON ({where_in_line(e)})", number)
                first_problem = first_problem or f"line {line_number} is not JSON ({e.msg}). Each line must be one JSON object."
            except RecursionError:
                item = Skipped(line_number, "nested too deeply to read", number)
            else:
                if isinstance(value, dict):
                    item = (line_number, number, value)
                else:
                    item = Skipped(line_number, f"not a JSON object (found {json_type(value)})", number)
                    first_problem = first_problem or (
                        f"line {line_number} is {json_type(value)}, not a JSON object; each line must be one object "
                        'like {"messages": [...]}.')
        if found:
            yield item
            continue
        pending.append(item)
        if isinstance(item, tuple):
            found = True
            yield from pending
            pending = []
        elif len(pending) >= NO_RECORD_LINES:
            break
    if found:
        return
    if not pending and number == 0:
        raise DataError(f"{name}: the file is empty; add at least one training example.")
    # Nothing line-by-line: maybe a pretty-printed JSON document saved as .jsonl.
    try:
        yield from json_records(path, name)
    except DataError:
        raise DataError(f"{name}: {first_problem}") from None


WHITESPACE = re.compile(r"[ \t\n\r]*")


def json_records(path, name: str):
    """(line, record number, object) for each item of a JSON array, of the one list in a wrapper
    object like {"data": [...]}, or the one object that is itself an example. `line` is the line of
    the file where the item starts."""
    text = read_text(path)
    decoder = json.JSONDecoder()
    start = WHITESPACE.match(text).end()
    try:
        value, end = decoder.raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}: is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                        "a .json file must hold one array of objects.") from None
    if WHITESPACE.match(text, end).end() < len(text):
        # several JSON values: probably JSON Lines named .json
        items = list(jsonl_strict(text))
        if isinstance(value, dict) and any(isinstance(item, tuple) for item in items):
            yield from items
            return
        e = json.JSONDecodeError("Extra data", text, WHITESPACE.match(text, end).end())
        raise DataError(f"{name}: is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                        "a .json file must hold one array of objects.")
    if isinstance(value, dict):
        registry = registry_kind(value)
        if registry:
            raise DataError(f"{name}: {registry}")
        if ROW_KEYS & value.keys():
            yield 1 + text.count("\n", 0, start), 1, value
            return
        lists = [key for key, item in value.items() if isinstance(item, list)]
        if len(lists) != 1:
            raise DataError(
                f"{name}: expected an array of objects or an object with one list like "
                f'{{"data": [...]}}, but found keys {sorted(value)[:8]}.'
            )
        items, start = value[lists[0]], list_start(text, start, lists[0], decoder)
    elif isinstance(value, list):
        items = value
    else:
        raise DataError(f"{name}: holds {json_type(value)}; a .json file must hold an array of objects.")
    if not items:
        raise DataError(f"{name}: the array is empty; add at least one training example.")
    if not any(isinstance(item, dict) for item in items):
        raise DataError(f"{name}: item 1 is {json_type(items[0])}, but every item must be a JSON object.")
    del value
    for (line, number), item in zip(item_lines(text, start, decoder), items):
        if isinstance(item, dict):
            yield line, number, item
        else:
            yield Skipped(line, f"not a JSON object (found {json_type(item)})", number)


def item_lines(text: str, start: int, decoder):
    """(line, item number) for each item of the JSON array that starts at text[start] ('[')."""
    pos = WHITESPACE.match(text, start + 1).end()
    line, last, number = 1 + text.count("\n", 0, pos), pos, 0
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", last, pos)
        last = pos
        number += 1
        yield line, number
        _, end = decoder.raw_decode(text, pos)
        pos = WHITESPACE.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = WHITESPACE.match(text, pos + 1).end()


def list_start(text: str, start: int, key: str, decoder) -> int:
    """Where the array under top-level `key` starts in the JSON object at text[start]."""
    pos = WHITESPACE.match(text, start + 1).end()
    while text[pos] != "}":
        name, pos = decoder.raw_decode(text, pos)
        pos = WHITESPACE.match(text, pos).end() + 1  # the ':'
        pos = WHITESPACE.match(text, pos).end()
        if name == key and text[pos] == "[":
            return pos
        _, pos = decoder.raw_decode(text, pos)
        pos = WHITESPACE.match(text, pos).end()
        if text[pos] == ",":
            pos = WHITESPACE.match(text, pos + 1).end()
    raise DataError(f"the list '{key}' was not found")  # unreachable for text that parsed


def jsonl_strict(text: str):
    number = 0
    for line_number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            number += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield Skipped(line_number, f"not JSON ({where_in_line(e)})", number)
                continue
            if isinstance(value, dict):
                yield line_number, number, value
            else:
                yield Skipped(line_number, f"not a JSON object (found {json_type(value)})", number)


REGISTRY_KEYS = {"file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"}
HF_INFO_KEYS = {"features", "builder_name", "config_name", "splits", "dataset_size"}


def registry_kind(value: dict) -> str | None:
    """The sentence for a JSON object that describes datasets instead of holding one, else None."""
    entries = [v for v in value.values() if isinstance(v, dict)]
    if entries and len(entries) == len(value) and sum(bool(REGISTRY_KEYS & e.keys()) for e in entries) > len(entries) / 2:
        return (f"is LLaMA-Factory's dataset_info.json, a registry of {len(entries)} datasets (a config, not "
                "training data); upload the data files it names, or pass it together with them to use its "
                "column mapping.")
    if len(HF_INFO_KEYS & value.keys()) >= 2:
        return ("is a Hugging Face dataset description (dataset_info.json of save_to_disk), not training data; "
                "pass the whole saved folder or its .arrow files.")
    return None


# ---- Hugging Face datasets: Parquet, Arrow, save_to_disk folders ------------------------------------------------

def hf_folder_files(path) -> list[str] | None:
    """The .arrow files of a save_to_disk folder (the train split of a DatasetDict), or None."""
    folder = str(path)
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        try:
            with open(os.path.join(folder, "dataset_dict.json")) as f:
                splits = json.load(f).get("splits") or []
        except (OSError, ValueError):
            return None
        split = "train" if "train" in splits else (splits[0] if splits else None)
        return hf_folder_files(os.path.join(folder, split)) if split else None
    state = os.path.join(folder, "state.json")
    if not os.path.isfile(state):
        return None
    try:
        with open(state) as f:
            files = [d["filename"] for d in json.load(f).get("_data_files", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    paths = [os.path.join(folder, os.path.basename(name)) for name in files]
    return paths if paths and all(os.path.isfile(p) for p in paths) else None


def arrow_batches(path, kind: str, name: str):
    """pyarrow RecordBatches of a .parquet, an .arrow file (IPC stream or file) or a save_to_disk folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=1000)
            return
        for file in (hf_folder_files(path) if kind == "hf_folder" else [path]):
            with pa.memory_map(str(file)) as source:
                try:
                    reader = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    source.seek(0)
                    reader = pa.ipc.open_file(source)
                    for i in range(reader.num_record_batches):
                        yield reader.get_batch(i)
                    continue
                yield from reader
    except (pa.ArrowException, OSError) as e:
        what = "Parquet" if kind == "parquet" else "Arrow"
        raise DataError(f"{name}: is not a readable {what} file ({str(e).splitlines()[0][:200]}); "
                        f"save it again with datasets or pandas.") from None


def table_records(path, kind: str, name: str):
    """(row, row number, object) for every row of a Parquet/Arrow table; the row number is also its 'line'."""
    number = 0
    for batch in arrow_batches(path, kind, name):
        for record in batch.to_pylist():
            number += 1
            yield number, number, record
    if number == 0:
        raise DataError(f"{name}: the table has no rows; add at least one training example.")


def where_in_line(e: json.JSONDecodeError) -> str:
    # Some messages already end in "at" ("Unterminated string starting at").
    return f"{e.msg} column {e.colno}" if e.msg.endswith(" at") else f"{e.msg} at column {e.colno}"


def json_type(value) -> str:
    names = {str: "a string", list: "an array", int: "a number", float: "a number",
             bool: "true/false", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def csv_records(path, name: str):
    """(header, rows) of a CSV/TSV read as a stream: rows yields (line, record number, {column: cell}) or
    Skipped; a row's line counts the header as line 1."""
    lines = (line for _, line in text_lines(path, name) if line is not None)
    first_line = next(lines, "")
    if not first_line.strip():
        if not any(line.strip() for line in lines):
            raise DataError(f"{name}: the file is empty; add at least one training example.")
        raise DataError(f"{name}: the header row is empty; the first line must name the columns.")
    if str(path).lower().endswith(".tsv"):
        delimiter = "\t"
    else:
        delimiter = max([",", ";", "\t"], key=first_line.count)
    csv.field_size_limit(64 * 1024 * 1024)
    reader = csv.reader(itertools.chain([first_line], lines), delimiter=delimiter)
    try:
        header = [cell.strip() for cell in next(reader)]
    except (StopIteration, csv.Error) as e:
        raise DataError(f"{name}: has no readable header row ({e}); the first line must name the columns.") from None
    if not any(header):
        raise DataError(f"{name}: the header row is empty; the first line must name the columns.")
    return header, csv_rows(reader, header, name)


def csv_rows(reader, header: list[str], name: str):
    number, found = 1, False
    while True:
        number += 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            found = True
            yield Skipped(number, f"not valid CSV ({e})", number - 1)
            continue
        if not any(cell.strip() for cell in cells):
            continue
        found = True
        extra = cells[len(header):]
        if any(cell.strip() for cell in extra):
            yield Skipped(number, f"has {len(cells)} cells but the header names {len(header)} columns", number - 1)
            continue
        cells = cells[: len(header)] + [""] * (len(header) - len(cells))
        yield number, number - 1, dict(zip(header, cells))
    if not found:
        raise DataError(f"{name}: has a header but no rows; add at least one training example.")
