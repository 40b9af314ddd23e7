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


def chat_tokens(messages: list[dict], tokenizer, tools=None) -> int:
    """Token count through the tokenizer's chat template; plain "role: content" lines without one."""
    if getattr(tokenizer, "chat_template", None):
        try:
            ids = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)
            if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding by default
                ids = ids["input_ids"]
            return len(ids)
        except Exception:  # some templates refuse e.g. system turns; count the text instead
            pass
    return len(tokenizer.encode(plain_text(messages), add_special_tokens=False))


def row_tokens(row: dict, shape: str, tokenizer) -> int:
    if shape == "text":
        return len(tokenizer.encode(row["text"], add_special_tokens=False))
    return max(chat_tokens(c, tokenizer, row.get("tools")) for c in conversations(row, shape))


def row_chars(row: dict, shape: str) -> int:
    if shape == "text":
        return len(row["text"])
    return max(sum(len(m["content"]) for m in c) for c in conversations(row, shape))


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


_overheads: dict[int, tuple[object, int, int]] = {}


def template_overhead(tokenizer) -> tuple[int, int]:
    """(tokens of a two-turn conversation of one-letter turns, extra tokens per further turn) under the
    tokenizer's chat template: what the template adds around the text (default system prompt included)."""
    cached = _overheads.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        two = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}]
        base = chat_tokens(two, tokenizer)
        per_turn = -(-max(0, chat_tokens(two * 3, tokenizer) - base) // 4)
        cached = _overheads[id(tokenizer)] = (tokenizer, base, per_turn)
    return cached[1], cached[2]


def token_bound(row: dict, shape: str, tokenizer) -> int:
    """An upper bound of row_tokens that needs no tokenizing: a byte-level tokenizer never makes more
    tokens than the text has UTF-8 bytes, plus what the template adds (and a margin of 16)."""
    if shape == "text":
        return utf8_size(row["text"]) + 16
    if row.get("tools") or any("tool_calls" in m for c in conversations(row, shape) for m in c):
        return row_tokens(row, shape, tokenizer)  # calls and schemas are not in the contents: count exactly
    base, per_turn = template_overhead(tokenizer)
    return max(sum(utf8_size(m["content"]) for m in c) + base + per_turn * len(c)
               for c in conversations(row, shape)) + 16


PROBE_TOOL = "ftchat_probe_tool"
_tool_support: dict[int, tuple[object, str]] = {}


def tool_support(tokenizer) -> str:
    """"tools" when the tokenizer's chat template renders tool schemas and tool calls (probed with
    apply_chat_template(tools=...)), else the reason it cannot train them."""
    if tokenizer is None:
        return "no tokenizer"
    cached = _tool_support.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    tools = [{"type": "function", "function": {"name": PROBE_TOOL, "description": "probe", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
                    "name": PROBE_TOOL, "arguments": {"city": "Tromsø-probe"}}}]},
                {"role": "tool", "content": "sunny"}]
    try:
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False) \
            if getattr(tokenizer, "chat_template", None) else ""
    except Exception:  # noqa: BLE001 - any template error means: no tool support
        text = ""
    if not text:
        verdict = "the base has no chat template"
    elif PROBE_TOOL in text and "Tromsø-probe" in text:
        verdict = "tools"
    else:
        verdict = "the base's chat template does not render tools or tool calls (it would drop them silently)"
    _tool_support[id(tokenizer)] = (tokenizer, verdict)
    return verdict
