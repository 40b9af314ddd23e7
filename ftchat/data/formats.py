"""Which source format a file is in, and how each row of it becomes one of the shapes in shapes.py.

Every normalizer takes one record (a dict read from the file) and returns one normalized row, or
raises RowError with the reason the row is skipped.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections import Counter

from .shapes import ROLES, DataError, RowError, message

SHAPE_OF = {
    "openai": "messages",
    "sharegpt": "messages",
    "alpaca": "messages",
    "prompt_completion": "prompt_completion",
    "conversational_prompt_completion": "messages",
    "trl_preference": "preference",
    "implicit_preference": "preference",
    "sharegpt_preference": "preference",
    "v1_preference": "preference",
    "ultrafeedback": "preference",
    "hh": "preference",
    "kto": "unpaired_preference",
    "kto_messages": "unpaired_preference",
    "prompt_only": "prompt_only",
    "text_jsonl": "text",
    "document": "text",
    "pdf": "text",
    # csv: the shape depends on the columns, see csv_plan
}
VOTE_ROWS = 50
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "observation": "tool", "function_call": "tool_call"}
TOOL_ROLES = ("tool", "tool_call", "function", "ipython")
MEDIA_KEYS = ("images", "image", "videos", "video", "audios", "audio")
MEDIA_TAGS = ("<image>", "<video>", "<audio>")
# Fields that hold what a prompt-only row would lose: a row with any of them is not prompt-only.
ANSWER_KEYS = {"completion", "completions", "chosen", "rejected", "response", "answer", "output", "reply",
               "assistant", "label", "labels", "messages", "conversations", "text"}
# Formats recognized but not trained on: the file gets this sentence instead of a silent, lossy import.
REFUSED = {
    "multimodal": "holds image/video/audio rows (LLaMA-Factory's multimodal format: '<image>' tags in the "
                  "messages with an 'images' list of files); ftchat trains text-only models, and importing the "
                  "text alone would silently drop every image. Remove the 'images' field and the '<image>' tags "
                  "to train on the text.",
    "segments": "holds Axolotl 'input_output' rows (template-free 'segments', each with its own train label); "
                "ftchat applies the base model's chat template itself and cannot train on pre-formatted "
                "segments. Convert them to 'messages' conversations.",
    "stepwise": "holds stepwise-supervision rows ('prompt', 'completions', one of 'labels' per reasoning step), "
                "which train a process reward model; ftchat has no process-reward method. To fine-tune on the "
                "reasoning, join the steps labelled true into one 'completion' per prompt.",
}
REFUSED_ROW = {
    "multimodal": "the row has images, video or audio (field '"
                  + "'/'".join(MEDIA_KEYS[::2]) + "'); ftchat trains text-only models",
    "segments": "the row holds template-free 'segments' (Axolotl input_output), which ftchat does not train on",
    "stepwise": "the row is stepwise supervision ('completions' + 'labels'), which ftchat does not train on",
}
# What the tokenizer in use allows: "tools" when its chat template renders tools and tool calls, else why not.
TOOL_SUPPORT: contextvars.ContextVar[str] = contextvars.ContextVar("tool_support", default="no tokenizer")
HH_MARKERS = ("\n\nHuman:", "\n\nAssistant:", "Human:")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
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
    if any(record.get(key) for key in MEDIA_KEYS):
        return "multimodal"
    if "segments" in record:
        return "segments"
    if "completions" in record and "labels" in record:
        return "stepwise"
    if "chosen_messages" in record and "rejected_messages" in record:
        return "v1_preference"
    if "chosen" in record and "rejected" in record:
        if not record.get("prompt") and isinstance(record.get("conversations") or record.get("messages"), list):
            return "sharegpt_preference"
        if not record.get("prompt") and isinstance(record["chosen"], str):
            return "hh" if any(m in record["chosen"] for m in HH_MARKERS) else "implicit_preference"
        if "score_chosen" in record or "score_rejected" in record:
            return "ultrafeedback"
        return "trl_preference"
    if "label" in record and ("messages" in record or "conversations" in record):
        return "kto_messages"
    if "completion" in record and "label" in record:
        return "kto"
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "prompt" in record and "completion" in record:
        return "conversational_prompt_completion" if isinstance(record["prompt"], list) else "prompt_completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "text" in record:
        return "text_jsonl"
    if "prompt" in record and not ANSWER_KEYS & record.keys():
        return "prompt_only"
    return None


FAMILY = {"trl_preference": "preference", "ultrafeedback": "preference", "hh": "preference",
          "implicit_preference": "preference"}


def detect_format(records: list[tuple[int, int, dict]], name: str) -> str:
    """Majority vote over the first VOTE_ROWS records; DataError when none matches a format or the
    format is one ftchat recognizes but does not train on."""
    votes = Counter(guess_format(record) for _, _, record in records[:VOTE_ROWS])
    votes.pop(None, None)
    if not votes:
        fields = sorted({key for _, _, record in records[:VOTE_ROWS] for key in record})[:12]
        raise DataError(f"{name}: no known format — rows have fields {fields}; {KNOWN_FIELDS}")
    fmt = votes.most_common(1)[0][0]
    if fmt in REFUSED:
        raise DataError(f"{name}: {REFUSED[fmt]}")
    return fmt


def normalizer_for(fmt: str):
    """The function turning one record of format `fmt` into a normalized row."""
    normalize = NORMALIZERS[fmt]

    def checked(record: dict) -> dict:
        guess = guess_format(record)
        if guess in REFUSED:
            raise RowError(REFUSED_ROW[guess])
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
        # OpenAI parts carry "text"; LLaMA-Factory's v1 schema carries "value".
        if all(p.get("type") == "text" and isinstance(p.get("text", p.get("value")), str) for p in value):
            return "".join(p.get("text", p.get("value")) for p in value)
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
        if role in TOOL_ROLES or item.get("tool_calls") or item.get("function_call"):
            if TOOL_SUPPORT.get() != "tools":
                raise RowError(tool_reason(len(raw) + 1, role, where, item))
            raw.append((role, None, item))  # normalized below, with its calls
            continue
        if role not in ROLES:
            raise RowError(f"unknown role '{role}'" if role is not None else f"a message in '{where}' has no '{role_key}'")
        raw.append((role, item.get(content_key), None))
    messages = []
    for number, (role, content, tool_item) in enumerate(raw, start=1):
        if tool_item is not None:
            messages.append(tool_message(number, role, tool_item, where, content_key))
            continue
        content = text_content(content, f"message {number} ({role})")
        tag = next((t for t in MEDIA_TAGS if t in content), None)
        if tag:
            raise RowError(f"message {number} ({role}) holds an '{tag}' tag: a placeholder for an image, video or "
                           "audio that a text-only model never sees; remove the tag (and the media) to train on the text")
        if not content.strip():
            if role == "system":
                continue
            raise RowError(f"empty content in message {number} ({role})")
        messages.append(message(role, content))
    return messages


def tool_arguments(value, where: str) -> dict:
    """A call's arguments as an object; JSON strings are decoded (twice when double-encoded, as some files are)."""
    for _ in range(3):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise RowError(f"{where} arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise RowError(f"{where} arguments must be a JSON object")
    return value


def tool_call(call, where: str) -> dict:
    """One call as {"type": "function", "function": {"name", "arguments": {...}}} (plus its id when given)."""
    if isinstance(call, str):
        try:
            call = json.loads(call)
        except ValueError:
            raise RowError(f"{where} is not a JSON object with 'name' and 'arguments'") from None
    if not isinstance(call, dict):
        raise RowError(f"{where} must be an object with 'name' and 'arguments'")
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RowError(f"{where} has no function 'name'")
    out = {"type": "function", "function": {"name": name, "arguments": tool_arguments(function.get("arguments"), where)}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def tool_message(number: int, role: str, item: dict, where: str, content_key: str) -> dict:
    """A tool-calling turn (assistant calls, or a tool's result) for a template that renders tools."""
    at = f"message {number} of '{where}'"
    if role == "tool_call":  # a ShareGPT function_call turn: the call is its value
        return {"role": "assistant", "content": "", "tool_calls": [tool_call(item.get(content_key), at)]}
    calls = item.get("tool_calls") or ([item["function_call"]] if item.get("function_call") else None)
    if calls:
        if not isinstance(calls, list):
            raise RowError(f"{at}: 'tool_calls' must be a list")
        text = text_content(item.get(content_key), at)
        return {"role": "assistant", "content": text,
                "tool_calls": [tool_call(c, f"{at} call {i}") for i, c in enumerate(calls, start=1)]}
    text = text_content(item.get(content_key), at)
    if not text.strip():
        raise RowError(f"empty content in {at} (a tool result)")
    out = {"role": "tool", "content": text}
    if isinstance(item.get("name"), str):
        out["name"] = item["name"]
    return out


def tool_schemas(value) -> list[dict] | None:
    """A row's 'tools' as a list of {"type": "function", "function": {...}} (a JSON string is decoded)."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError("field 'tools' is not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError("field 'tools' must be a list of function schemas")
    return [t if t.get("type") == "function" and isinstance(t.get("function"), dict) else
            {"type": "function", "function": t} for t in value]


def with_tools(row: dict, record: dict) -> dict:
    """Add the record's tool schemas to a messages row when tool calls are trained."""
    if TOOL_SUPPORT.get() == "tools":
        tools = tool_schemas(record.get("tools"))
        if tools:
            row["tools"] = tools
    return row


def tool_reason(number: int, role, where: str, item: dict) -> str:
    """Why a tool-calling turn cannot be trained: names the message and the field."""
    if item.get("tool_calls") or item.get("function_call") or role == "tool_call":
        key = "tool_calls" if item.get("tool_calls") else "function_call" if item.get("function_call") else None
        what = (f"message {number} of '{where}' calls a tool (" + (f"field '{key}'" if key else
                f"'{item.get('from') or item.get('role')}' turn") + ")")
    else:
        what = f"message {number} of '{where}' is a tool result (role '{item.get('from') or role}')"
    support = TOOL_SUPPORT.get()
    if support == "no tokenizer":
        why = ("tool calls train only with a base whose chat template renders tools: check the file with that "
               "base (--base NAME)")
    else:
        why = f"{support}, so the tool calls would be lost"
    return f"{what}; {why}, or remove the tool turns to train on the rest"


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
    return with_tools({"messages": require_assistant(conversation(field(record, "messages"), "messages"))}, record)


def sharegpt_turns(record: dict, key: str) -> list[dict]:
    """The turns under `key` in ShareGPT ('from'/'value') or OpenAI ('role'/'content') keys, with the
    row's 'system' field as a first system turn."""
    turns = field(record, key)
    keys = ("from", "value")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
        keys = ("role", "content")
    messages = conversation(turns, key, *keys, role_map=SHAREGPT_ROLES)
    system = record.get("system")
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, message("system", system))
    return messages


def normalize_sharegpt(record: dict) -> dict:
    return with_tools({"messages": require_assistant(sharegpt_turns(record, "conversations"))}, record)


def normalize_conversational_prompt_completion(record: dict) -> dict:
    """TRL's conversational prompt-completion: the prompt turns followed by the completion turns."""
    prompt = prompt_messages(field(record, "prompt"))
    completion = field(record, "completion")
    if isinstance(completion, str):
        completion = [message("assistant", completion)] if completion.strip() else []
    else:
        completion = conversation(completion, "completion")
    if not completion or any(m["role"] != "assistant" for m in completion):
        raise RowError("'completion' must be one or more assistant turns")
    return {"messages": prompt + completion}


def normalize_prompt_only(record: dict) -> dict:
    """A prompt to generate from (GRPO/RLOO): always conversational, ending with a user turn."""
    return {"prompt": prompt_messages(field(record, "prompt"))}


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


def common_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's implicit prompt of a standard preference row: the text both share, cut before a space."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if 0 < n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def normalize_preference(record: dict) -> dict:
    chosen, rejected = field(record, "chosen"), field(record, "rejected")
    if record.get("prompt"):
        prompt = prompt_messages(record["prompt"])
    elif isinstance(chosen, str) and isinstance(rejected, str) and not any(m in chosen for m in HH_MARKERS):
        prompt_text, chosen_text, rejected_text = common_prefix(chosen, rejected)
        if not prompt_text.strip():
            raise RowError("'chosen' and 'rejected' share no beginning to use as the prompt; add a 'prompt' field")
        if not chosen_text.strip() or not rejected_text.strip():
            raise RowError("'chosen' and 'rejected' are the same text after their shared prompt")
        return {"prompt": [message("user", prompt_text)], "chosen": [message("assistant", chosen_text)],
                "rejected": [message("assistant", rejected_text)]}
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


def normalize_sharegpt_preference(record: dict) -> dict:
    """LLaMA-Factory's ShareGPT preference: the prompt turns in 'conversations', one reply object each
    in 'chosen' and 'rejected'."""
    key = "conversations" if "conversations" in record else "messages"
    prompt = sharegpt_turns(record, key)
    if prompt[-1]["role"] != "user":
        raise RowError(f"'{key}' must end with a user turn (the prompt the replies answer)")
    replies = {}
    for side in ("chosen", "rejected"):
        value = field(record, side)
        if isinstance(value, dict):
            keys = ("role", "content") if "role" in value else ("from", "value")
            value = conversation([value], side, *keys, role_map=SHAREGPT_ROLES)
        replies[side] = reply(value, prompt, side)
    return {"prompt": prompt, **replies}


def normalize_v1_preference(record: dict) -> dict:
    """LLaMA-Factory's v1 schema: two whole conversations; the turns they share are the prompt."""
    return normalize_preference({"chosen": field(record, "chosen_messages"),
                                 "rejected": field(record, "rejected_messages")})


def normalize_kto_messages(record: dict) -> dict:
    """A conversation with a good/bad label (LLaMA-Factory's KTO): the last assistant turn is the answer."""
    key = "messages" if "messages" in record else "conversations"
    turns = sharegpt_turns(record, key)
    if len(turns) < 2 or turns[-1]["role"] != "assistant":
        raise RowError(f"'{key}' must end with the assistant answer that 'label' rates")
    prompt = turns[:-1]
    if prompt[-1]["role"] != "user":
        raise RowError(f"'{key}' must have a user turn right before the rated answer")
    return {"prompt": prompt, "completion": turns[-1:], "label": label_value(field(record, "label"))}


def normalize_kto(record: dict) -> dict:
    prompt = prompt_messages(field(record, "prompt"))
    completion = reply(field(record, "completion"), prompt, "completion")
    return {"prompt": prompt, "completion": completion, "label": label_value(field(record, "label"))}


NORMALIZERS = {
    "openai": normalize_openai,
    "sharegpt": normalize_sharegpt,
    "alpaca": normalize_alpaca,
    "prompt_completion": normalize_prompt_completion,
    "conversational_prompt_completion": normalize_conversational_prompt_completion,
    "trl_preference": normalize_preference,
    "implicit_preference": normalize_preference,
    "sharegpt_preference": normalize_sharegpt_preference,
    "v1_preference": normalize_v1_preference,
    "ultrafeedback": normalize_preference,
    "hh": normalize_preference,
    "kto": normalize_kto,
    "kto_messages": normalize_kto_messages,
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


# ---- checks on normalized rows ---------------------------------------------------------------

def row_strings(value):
    """Every string in a normalized row (contents of messages, prompts, texts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from row_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from row_strings(item)


def placeholders(row: dict) -> set[str]:
    """The {{name}}-style template placeholders in a row (LLaMA-Factory's identity.json has them)."""
    found = set()
    for text in row_strings(row):
        if "{{" in text:
            found.update(PLACEHOLDER.findall(text))
    return found
