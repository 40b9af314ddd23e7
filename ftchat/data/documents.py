"""Documents (.txt, .md, .pdf) -> text chunks for continued pre-training."""

from __future__ import annotations

import io
import logging
import math
import re

from .shapes import DataError

CHARS_PER_TOKEN = 4  # the rough rule used when no tokenizer is given
JOIN_MARGIN = 8
MIN_FILL = 32  # the fewest tokens of room worth filling with the head of a long paragraph


def token_counter(tokenizer):
    if tokenizer is None:
        return lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def chunk_text(text: str, tokenizer=None, chunk_tokens: int = 512) -> list[str]:
    """Pieces of `text` of at most chunk_tokens tokens each (no special tokens), packed from whole
    paragraphs where they fit. Without a tokenizer a token is taken as 4 characters."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    count = token_counter(tokenizer)
    separator = count("\n\n") if tokenizer is not None else 1
    pieces, open_size = [], None  # open_size: the tokens of the last chunk being filled, when it has room left
    for paragraph in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        n = count(paragraph)
        if n <= chunk_tokens:
            pieces.append((paragraph, n))
            open_size = n if open_size is None or open_size + separator + n > chunk_tokens \
                else open_size + separator + n
            continue
        # An over-long paragraph first fills the room the chunk before it has left: cut only at the chunk size, its
        # tail would become a row of a few tokens before every long paragraph.
        room = chunk_tokens - (open_size + separator) - JOIN_MARGIN if open_size is not None else 0
        if room >= MIN_FILL:
            head = split_long(paragraph, tokenizer, room)[0]
            pieces.append((head, count(head)))
            paragraph = paragraph[paragraph.index(head) + len(head):].strip()
        split = [(p, count(p)) for p in split_long(paragraph, tokenizer, chunk_tokens)] if paragraph else []
        pieces.extend(split)
        open_size = split[-1][1] if split else None
    chunks, current, size = [], [], 0
    for piece, n in pieces:
        if current:
            size += separator + n
            # Tokens merge differently across a join (a paragraph's first token often changes after "\n\n": up to
            # ~2 tokens a join), so once the estimate comes that near the limit, count the real text.
            if size > chunk_tokens - JOIN_MARGIN - 2 * len(current) and tokenizer is not None:
                size = count("\n\n".join(current + [piece]))
            if size > chunk_tokens:
                # A Markdown heading goes with the paragraph after it, when both fit.
                heading = current[-1] if len(current) > 1 and current[-1].startswith("#") else None
                with_heading = count(f"{heading}\n\n{piece}") if heading else None
                if heading and with_heading <= chunk_tokens:
                    chunks.append("\n\n".join(current[:-1]))
                    current, size = [heading], with_heading
                else:
                    chunks.append("\n\n".join(current))
                    current, size = [], n
        else:
            size = n
        current.append(piece)
    if current:
        chunks.append("\n\n".join(current))
    if tokenizer is None:
        return chunks
    # A safety net: no chunk leaves here over the budget.
    exact = []
    for chunk in chunks:
        exact.extend([chunk] if count(chunk) <= chunk_tokens else split_long(chunk, tokenizer, chunk_tokens))
    return exact


def split_long(text: str, tokenizer, chunk_tokens: int) -> list[str]:
    """Cut one over-long paragraph into pieces of at most chunk_tokens tokens."""
    if tokenizer is None:
        return split_by_chars(text, chunk_tokens * CHARS_PER_TOKEN)
    count = token_counter(tokenizer)
    budget = chunk_tokens
    while True:
        pieces = split_by_tokens(text, tokenizer, budget)
        over = max((count(p) for p in pieces), default=0) - chunk_tokens
        if over <= 0 or budget == 1:
            return pieces
        budget = max(1, budget - max(over, budget // 16))


def split_by_tokens(text: str, tokenizer, budget: int) -> list[str]:
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        # Slow tokenizers have no offsets: decode token windows instead.
        ids = tokenizer.encode(text, add_special_tokens=False)
        return [p for i in range(0, len(ids), budget)
                if (p := tokenizer.decode(ids[i:i + budget]).strip())]
    starts = [start for start, _ in offsets]
    pieces, i = [], 0
    while i < len(starts):
        cut = min(i + budget, len(starts))
        if cut < len(starts):
            # Step back to a token that begins a word, so words stay whole where possible.
            cut = next((k for k in range(cut, i, -1) if word_start(text, starts[k])), cut)
        end = starts[cut] if cut < len(starts) else len(text)
        if piece := text[starts[i]:end].strip():
            pieces.append(piece)
        i = cut
    return pieces


def word_start(text: str, position: int) -> bool:
    return position > 0 and (text[position - 1].isspace() or text[position].isspace())


def split_by_chars(text: str, size: int) -> list[str]:
    """Pieces of at most `size` characters, cut at whitespace where there is some."""
    pieces = []
    while len(text) > size:
        cut = text.rfind(" ", size // 2, size + 1)
        cut = cut if cut > 0 else size
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return [p for p in pieces if p]


def pdf_text(data: bytes, name: str) -> str:
    """The text of every page of a PDF, pages separated by a blank line."""
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # broken PDFs log noisy warnings
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DataError(f"{name}: the PDF is password-protected; save an unprotected copy and upload that.")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except DataError:
        raise
    except Exception as e:  # pypdf raises many kinds of errors on damaged files
        raise DataError(f"{name}: could not be read as a PDF ({e}); export it again or upload its text as .txt.") from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise DataError(
            f"{name}: the PDF has no extractable text (it may be scanned images); run OCR on it or upload its text as .txt."
        )
    return text
