"""Training data: detect a file's format and normalize it into one of the shapes in shapes.py."""

from .check import check_files, length_stats, preview_rows, summarize_file, token_lengths
from .documents import chunk_text
from .formats import to_messages
from .load import load_dataset, load_file
from .shapes import SHAPES, DataError, LoadedFile, Skipped

__all__ = [
    "SHAPES", "DataError", "Skipped", "LoadedFile", "load_file", "load_dataset", "to_messages",
    "chunk_text", "check_files", "token_lengths", "preview_rows", "length_stats", "summarize_file",
]
