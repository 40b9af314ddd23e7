"""How long a normalized row is, in tokens (with a tokenizer) or characters (without)."""

from __future__ import annotations

from .formats import to_messages


def conversations(row: dict, shape: str) -> list[list[dict]]:
    """The full conversations a row trains on (two for a preference pair)."""
    if shape == "messages":
        return [row["messages"]]
    if shape == "prompt_completion":
        return [to_messages(row)["messages"]]
    if shape == "preference":
        return [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]
    if shape == "unpaired_preference":
        return [row["prompt"] + row["completion"]]
    if shape == "prompt_only":
        return [row["prompt"]]
    return []


def plain_text(messages: list[dict]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def chat_tokens(messages: list[dict], tokenizer) -> int:
    """Token count through the tokenizer's chat template; plain "role: content" lines without one."""
    if getattr(tokenizer, "chat_template", None):
        try:
            ids = tokenizer.apply_chat_template(messages, tokenize=True)
            if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding by default
                ids = ids["input_ids"]
            return len(ids)
        except Exception:  # some templates refuse e.g. system turns; count the text instead
            pass
    return len(tokenizer.encode(plain_text(messages), add_special_tokens=False))


def row_tokens(row: dict, shape: str, tokenizer) -> int:
    if shape == "text":
        return len(tokenizer.encode(row["text"], add_special_tokens=False))
    return max(chat_tokens(c, tokenizer) for c in conversations(row, shape))


def row_chars(row: dict, shape: str) -> int:
    if shape == "text":
        return len(row["text"])
    return max(sum(len(m["content"]) for m in c) for c in conversations(row, shape))
