"""Which source format a file is in, and how each row of it becomes one of the shapes in shapes.py.

Every normalizer takes one record (a dict read from the file) and returns one normalized row, or
raises RowError with the reason the row is skipped.
"""

from __future__ import annotations

import re
from collections import Counter

from .shapes import ROLES, DataError, RowError, message

SHAPE_OF = {
    "openai": "messages",
    "sharegpt": "messages",
    "alpaca": "messages",
    "prompt_completion": "prompt_completion",
    "trl_preference": "preference",
    "ultrafeedback": "preference",
    "hh": "preference",
    "kto": "unpaired_preference",
    "prompt_only": "prompt_only",
    "text_jsonl": "text",
    "document": "text",
    "pdf": "text",
    # csv: the shape depends on the columns, see csv_plan
}
VOTE_ROWS = 50
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
LABELS = {"true": True, "1": True, "yes": True, "good": True, "👍": True,
          "false": False, "0": False, "no": False, "bad": False, "👎": False}
PROMPT_COLUMNS = ("prompt", "question", "instruction", "input", "query", "user")
RESPONSE_COLUMNS = ("response", "answer", "output", "completion", "reply", "assistant")
SYSTEM_COLUMNS = ("system", "system_prompt")
KNOWN_FIELDS = ("expected e.g. 'messages', 'conversations', 'instruction'/'output', "
                "'prompt'/'completion', 'prompt'/'chosen'/'rejected'.")


# ---- detection -------------------------------------------------------------------------------

def guess_format(record: dict) -> str | None:
    """The source format one record looks like, from its fields; None when it matches none."""
    if "chosen" in record and "rejected" in record:
        if not record.get("prompt") and isinstance(record["chosen"], str):
            return "hh"
        if "score_chosen" in record or "score_rejected" in record:
            return "ultrafeedback"
        return "trl_preference"
    if "completion" in record and "label" in record:
        return "kto"
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "text" in record:
        return "text_jsonl"
    if "prompt" in record:  # nothing to imitate or compare: prompts for a method that writes its own answers
        return "prompt_only"
    return None


FAMILY = {"trl_preference": "preference", "ultrafeedback": "preference", "hh": "preference"}


def detect_format(records: list[tuple[int, dict]], name: str) -> str:
    """Majority vote over the first VOTE_ROWS records; DataError when none matches a format."""
    votes = Counter(guess_format(record) for _, record in records[:VOTE_ROWS])
    votes.pop(None, None)
    if not votes:
        fields = sorted({key for _, record in records[:VOTE_ROWS] for key in record})[:12]
        raise DataError(f"{name}: no known format — rows have fields {fields}; {KNOWN_FIELDS}")
    return votes.most_common(1)[0][0]


def normalizer_for(fmt: str):
    """The function turning one record of format `fmt` into a normalized row."""
    normalize = NORMALIZERS[fmt]

    def checked(record: dict) -> dict:
        guess = guess_format(record)
        other = guess is not None and FAMILY.get(guess, guess) != FAMILY.get(fmt, fmt)
        try:
            row = normalize(record)
        except RowError as e:
            if other:
                raise RowError(f"{e} (the row looks like '{guess}', but this file is '{fmt}')") from None
            raise
        if other:  # it happened to normalize, but a row of another format would lose fields
            raise RowError(f"the row looks like '{guess}' (fields {sorted(record)[:8]}), but this file is '{fmt}'")
        return row

    return checked


# ---- pieces ----------------------------------------------------------------------------------

def field(record: dict, key: str):
    if key not in record or record[key] is None:
        raise RowError(f"missing field '{key}'")
    return record[key]


def text_content(value, where: str) -> str:
    """A message's content as a string; OpenAI content-part lists are joined when all text."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
            return "".join(p["text"] for p in value)
        kinds = sorted({str(p.get("type")) for p in value if p.get("type") != "text"})
        raise RowError(f"{where} has non-text content ({', '.join(kinds)}); only text is supported")
    raise RowError(f"{where} content must be a string")


def conversation(items, where: str, role_key="role", content_key="content", role_map=None) -> list[dict]:
    """Validated [{'role', 'content'}] from a list of message dicts; empty system turns are dropped."""
    if not isinstance(items, list) or not items:
        raise RowError(f"'{where}' must be a non-empty list of messages")
    raw = []
    for item in items:
        if not isinstance(item, dict):
            raise RowError(f"'{where}' holds a {type(item).__name__}, not a message object")
        role = item.get(role_key)
        role = role_map.get(role, role) if role_map and isinstance(role, str) else role
        if role not in ROLES:
            raise RowError(f"unknown role '{role}'" if role is not None else f"a message in '{where}' has no '{role_key}'")
        raw.append((role, item.get(content_key)))
    messages = []
    for number, (role, content) in enumerate(raw, start=1):
        content = text_content(content, f"message {number} ({role})")
        if not content.strip():
            if role == "system":
                continue
            raise RowError(f"empty content in message {number} ({role})")
        messages.append(message(role, content))
    return messages


def require_assistant(messages: list[dict]) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("no assistant turn")
    return messages


def non_empty(record: dict, key: str) -> str:
    value = field(record, key)
    if not isinstance(value, str):
        raise RowError(f"field '{key}' must be a string")
    if not value.strip():
        raise RowError(f"empty content in field '{key}'")
    return value


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["role"] == y["role"] and x["content"].strip() == y["content"].strip() for x, y in zip(a, b)
    )


# ---- conversations ---------------------------------------------------------------------------

def normalize_openai(record: dict) -> dict:
    return {"messages": require_assistant(conversation(field(record, "messages"), "messages"))}


def normalize_sharegpt(record: dict) -> dict:
    turns = field(record, "conversations")
    keys = ("from", "value")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
        keys = ("role", "content")
    messages = conversation(turns, "conversations", *keys, role_map=SHAREGPT_ROLES)
    system = record.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, message("system", system))
    return {"messages": require_assistant(messages)}


def normalize_alpaca(record: dict) -> dict:
    instruction = non_empty(record, "instruction")
    extra = record.get("input")
    if isinstance(extra, str) and extra.strip():
        instruction = f"{instruction}\n\n{extra}"
    messages = [message("user", instruction), message("assistant", non_empty(record, "output"))]
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        messages.insert(0, message("system", system))
    return {"messages": messages}


def normalize_prompt_completion(record: dict) -> dict:
    for key in ("prompt", "completion"):
        if isinstance(record.get(key), list):
            raise RowError(f"field '{key}' must be a string (for conversations use a 'messages' field)")
    return {"prompt": non_empty(record, "prompt"), "completion": non_empty(record, "completion")}


def to_messages(row: dict) -> dict:
    """A prompt_completion row as a messages row: [user prompt, assistant completion]."""
    return {"messages": [message("user", row["prompt"]), message("assistant", row["completion"])]}


def normalize_text(record: dict) -> dict:
    return {"text": non_empty(record, "text")}


# ---- preferences -----------------------------------------------------------------------------

def prompt_messages(value) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise RowError("empty content in field 'prompt'")
        return [message("user", value)]
    messages = conversation(value, "prompt")
    if messages[-1]["role"] != "user":
        raise RowError("'prompt' must end with a user turn")
    return messages


def reply(value, prompt: list[dict], key: str) -> list[dict]:
    """The single assistant reply in `value`, after removing `prompt` if `value` repeats it."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"empty content in field '{key}'")
        return [message("assistant", value)]
    messages = conversation(value, key)
    if len(messages) > 1 and same(messages[: len(prompt)], prompt):
        messages = messages[len(prompt):]
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise RowError(f"'{key}' must be one assistant reply after the prompt, found {len(messages)} messages")
    return messages


HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_split(text: str, key: str) -> tuple[list[dict], str]:
    """Anthropic HH text -> (prompt turns, final assistant reply)."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    cut = text.rfind("\n\nAssistant:")
    if cut < 0:
        raise RowError(f"'{key}' has no '\\n\\nAssistant:' turn")
    parts = HH_TURN.split(text[:cut])
    if parts[0].strip():
        raise RowError(f"'{key}' must start with '\\n\\nHuman:'")
    prompt = [message("user" if who == "Human" else "assistant", said.strip())
              for who, said in zip(parts[1::2], parts[2::2])]
    if not prompt or prompt[-1]["role"] != "user" or any(not m["content"] for m in prompt):
        raise RowError(f"'{key}' needs non-empty Human turns before the last Assistant turn")
    answer = text[cut + len("\n\nAssistant:"):].strip()
    if not answer:
        raise RowError(f"empty content in the last Assistant turn of '{key}'")
    return prompt, answer


def normalize_preference(record: dict) -> dict:
    chosen, rejected = field(record, "chosen"), field(record, "rejected")
    if record.get("prompt"):
        prompt = prompt_messages(record["prompt"])
    elif isinstance(chosen, str) and isinstance(rejected, str):
        prompt, chosen_text = hh_split(chosen, "chosen")
        other_prompt, rejected_text = hh_split(rejected, "rejected")
        if not same(prompt, other_prompt):
            raise RowError("'chosen' and 'rejected' differ before their last Assistant turn")
        return {"prompt": prompt, "chosen": [message("assistant", chosen_text)],
                "rejected": [message("assistant", rejected_text)]}
    elif isinstance(chosen, list) and isinstance(rejected, list):
        # Implicit prompt: the turns chosen and rejected share.
        a, b = conversation(chosen, "chosen"), conversation(rejected, "rejected")
        shared = 0
        while shared < min(len(a), len(b)) and same(a[shared:shared + 1], b[shared:shared + 1]):
            shared += 1
        if shared == 0:
            raise RowError("missing field 'prompt'")
        prompt = a[:shared]
        if prompt[-1]["role"] != "user":
            raise RowError("the turns shared by 'chosen' and 'rejected' must end with a user turn")
    else:
        raise RowError("missing field 'prompt'")
    return {"prompt": prompt, "chosen": reply(chosen, prompt, "chosen"),
            "rejected": reply(rejected, prompt, "rejected")}


def label_value(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    raise RowError(f"label {value!r} is not a yes/no value; use true/false")


def normalize_kto(record: dict) -> dict:
    prompt = prompt_messages(field(record, "prompt"))
    completion = reply(field(record, "completion"), prompt, "completion")
    return {"prompt": prompt, "completion": completion, "label": label_value(field(record, "label"))}


def normalize_prompt_only(record: dict) -> dict:
    return {"prompt": prompt_messages(field(record, "prompt"))}


NORMALIZERS = {
    "openai": normalize_openai,
    "sharegpt": normalize_sharegpt,
    "alpaca": normalize_alpaca,
    "prompt_completion": normalize_prompt_completion,
    "trl_preference": normalize_preference,
    "ultrafeedback": normalize_preference,
    "hh": normalize_preference,
    "kto": normalize_kto,
    "prompt_only": normalize_prompt_only,
    "text_jsonl": normalize_text,
}


# ---- CSV -------------------------------------------------------------------------------------

def csv_plan(header: list[str], name: str):
    """(shape, normalizer) for a CSV from its column names, matched case-insensitively."""
    columns = {h.strip().lower(): h for h in header if h}

    def first(names):
        return next((columns[n] for n in names if n in columns), None)

    prompt, response, system = first(PROMPT_COLUMNS), first(RESPONSE_COLUMNS), first(SYSTEM_COLUMNS)

    def cell(record, column):
        value = record.get(column) or ""
        if not value.strip():
            raise RowError(f"empty cell in column '{column}'")
        return value

    def with_system(record, messages):
        if system and (record.get(system) or "").strip():
            return [message("system", record[system])] + messages
        return messages

    def user_text(record):
        text = cell(record, prompt)
        # instruction + input columns: Alpaca laid out as a table.
        if prompt == columns.get("instruction") and "input" in columns and record[columns["input"]].strip():
            text = f"{text}\n\n{record[columns['input']]}"
        return text

    if "chosen" in columns and "rejected" in columns:
        def normalize(record):
            row = normalize_preference({
                "prompt": user_text(record) if prompt else None,
                "chosen": cell(record, columns["chosen"]), "rejected": cell(record, columns["rejected"]),
            })
            row["prompt"] = with_system(record, row["prompt"])
            return row
        return "preference", normalize
    if "label" in columns and prompt and response:
        def normalize(record):
            return {"prompt": with_system(record, [message("user", user_text(record))]),
                    "completion": [message("assistant", cell(record, response))],
                    "label": label_value(record[columns["label"]])}
        return "unpaired_preference", normalize
    if prompt and response:
        def normalize(record):
            return {"messages": with_system(record, [message("user", user_text(record)),
                                                     message("assistant", cell(record, response))])}
        return "messages", normalize
    if "text" in columns:
        return "text", lambda record: {"text": cell(record, columns["text"])}
    raise DataError(
        f"{name}: no known columns — the header is {header[:12]}; expected a prompt column "
        f"({', '.join(PROMPT_COLUMNS)}) and a response column ({', '.join(RESPONSE_COLUMNS)}), "
        "or prompt/chosen/rejected."
    )
