"""LLaMA-Factory's dataset_info.json used as a column map: given with the data files it names, each file's
columns and role tags are renamed to a format ftchat reads (see formats.py), so renamed columns still import.

Only local files (`file_name`) are mapped; hub entries (`hf_hub_url`, ...) are never fetched.
"""
from __future__ import annotations

import json
import os

from .readers import display_name, registry_kind
from .shapes import DataError, Skipped

REGISTRY_NAME = "dataset_info.json"
MAX_REGISTRY_BYTES = 16 * 1024 * 1024


def is_registry(path) -> bool:
    return os.path.basename(str(path)) == REGISTRY_NAME and os.path.isfile(path)


def read_registry(path) -> dict:
    """The registry's entries; DataError when the file is not LLaMA-Factory's dataset_info.json."""
    name = display_name(path)
    if os.path.getsize(path) > MAX_REGISTRY_BYTES:
        raise DataError(f"{name}: is too large for a dataset registry; is it training data under another name?")
    try:
        with open(path, encoding="utf-8-sig") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{name}: is not valid JSON ({e}); LLaMA-Factory's dataset_info.json is one object.") from None
    if not isinstance(value, dict) or not registry_kind(value) or "LLaMA-Factory" not in registry_kind(value):
        raise DataError(f"{name}: is not LLaMA-Factory's dataset registry (an object of entries with 'file_name').")
    return value


def split_registry(paths) -> tuple[dict | None, list]:
    """(entries of the dataset_info.json among `paths`, the other paths). A registry given alone stays a path
    (its report then says what it is)."""
    paths = list(paths)
    registries = [p for p in paths if is_registry(p)]
    others = [p for p in paths if not is_registry(p)]
    if not registries or not others:
        return None, paths
    entries = {}
    for registry in registries:
        entries.update(read_registry(registry))
    return entries, others


def entry_for(entries: dict | None, path) -> tuple[str, dict] | None:
    """(entry name, entry) whose file_name is this file, if any."""
    if not entries:
        return None
    name = os.path.basename(str(path))
    for key, entry in entries.items():
        if isinstance(entry, dict) and os.path.basename(str(entry.get("file_name") or "")) == name:
            return key, entry
    return None


def column_map(entry: dict):
    """A function turning the file's record stream into records in a format ftchat reads."""
    columns = entry.get("columns") or {}
    sharegpt = entry.get("formatting", "alpaca") == "sharegpt"
    ranking = bool(entry.get("ranking"))
    tags = entry.get("tags") or {}
    roles = {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"): "assistant",
             tags.get("system_tag", "system"): "system", tags.get("observation_tag", "observation"): "tool",
             tags.get("function_tag", "function_call"): "function_call"}
    role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")

    def turn(item):
        if not isinstance(item, dict):
            return item
        return {"role": roles.get(item.get(role_tag), item.get(role_tag)), "content": item.get(content_tag)}

    def media(record, out):
        for kind in ("images", "videos", "audios"):
            if columns.get(kind) and record.get(columns[kind]):
                out[kind] = record[columns[kind]]
        return out

    def convert_sharegpt(record: dict) -> dict:
        turns = record.get(columns.get("messages", "conversations"))
        turns = [turn(t) for t in turns] if isinstance(turns, list) else turns
        system = record.get(columns["system"]) if columns.get("system") else None
        out = {"messages": turns}
        if isinstance(system, str) and system.strip():
            out["system"] = system
        if ranking:
            out["chosen"] = turn(record.get(columns.get("chosen", "chosen")))
            out["rejected"] = turn(record.get(columns.get("rejected", "rejected")))
        elif columns.get("kto_tag"):
            out["label"] = record.get(columns["kto_tag"])
        return media(record, out)

    def convert_alpaca(record: dict) -> dict:
        prompt = record.get(columns.get("prompt", "instruction"))
        query = record.get(columns.get("query", "input"))
        response = record.get(columns.get("response", "output"))
        if isinstance(prompt, str) and isinstance(query, str) and query.strip():
            prompt = f"{prompt}\n{query}"
        turns = []
        system = record.get(columns["system"]) if columns.get("system") else None
        if isinstance(system, str) and system.strip():
            turns.append({"role": "system", "content": system})
        history = record.get(columns["history"]) if columns.get("history") else None
        for pair in history or []:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        user = turns + [{"role": "user", "content": prompt}]
        if ranking:
            return media(record, {"prompt": user, "chosen": record.get(columns.get("chosen", "chosen")),
                                  "rejected": record.get(columns.get("rejected", "rejected"))})
        if columns.get("kto_tag"):
            return media(record, {"prompt": user, "completion": response, "label": record.get(columns["kto_tag"])})
        if response is None and "response" not in columns and "query" not in columns:
            return media(record, {"text": prompt})  # a pre-training file: its one column is the text
        return media(record, {"messages": user + [{"role": "assistant", "content": response}]})

    convert = convert_sharegpt if sharegpt else convert_alpaca

    def mapped(items):
        for item in items:
            if isinstance(item, Skipped):
                yield item
            else:
                line, number, record = item
                yield line, number, convert(record)

    return mapped
