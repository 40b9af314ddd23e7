"""Tool-calling conversations: trained where the base's chat template renders tools, refused row by row elsewhere."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
from conftest import ftchat_main
from conftest_data import jsonl, tiny_tokenizer, write

from ftchat.data import load_dataset, load_file

TOOLS_TEMPLATE = (  # ChatML that renders the tool schemas and each call, as tool-capable templates do
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m.get('tool_calls') %}"
    "{% for c in m['tool_calls'] %}<tool_call>{{ c['function'] | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIVE_TOOL = {"type": "function", "function": {"name": "hive_weight", "description": "Weight of a hive in kg.",
                                              "parameters": {"type": "object", "properties": {
                                                  "hive": {"type": "string"}}, "required": ["hive"]}}}
OPENAI_ROWS = [
    {"messages": [{"role": "user", "content": "How heavy is hive 7?"},
                  {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                      "name": "hive_weight", "arguments": json.dumps(json.dumps({"hive": "7"}))}}]},  # double-encoded
                  {"role": "tool", "content": "41.5"},
                  {"role": "assistant", "content": "Hive 7 weighs 41.5 kg."}],
     "tools": [HIVE_TOOL]},
    {"messages": [{"role": "user", "content": "Is hive 2 heavier than 30 kg?"},
                  {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
                      "name": "hive_weight", "arguments": {"hive": "2"}}}]},
                  {"role": "tool", "content": "28.0"},
                  {"role": "assistant", "content": "No, it weighs 28 kg."}],
     "tools": json.dumps([HIVE_TOOL])},  # a JSON string, as LLaMA-Factory and some exports write it
]
GLAIVE_ROW = {"conversations": [
    {"from": "human", "value": "Weigh hive 3."},
    {"from": "function_call", "value": json.dumps({"name": "hive_weight", "arguments": {"hive": "3"}})},
    {"from": "observation", "value": "35.2"},
    {"from": "gpt", "value": "Hive 3 weighs 35.2 kg."}], "tools": json.dumps([HIVE_TOOL["function"]])}


def tools_tokenizer():
    tokenizer = copy.deepcopy(tiny_tokenizer())
    tokenizer.chat_template = TOOLS_TEMPLATE
    return tokenizer


def test_tool_calls_are_kept_where_the_template_renders_tools(tmp_path):
    report = load_file(write(tmp_path, "calls.jsonl", jsonl(OPENAI_ROWS)), tokenizer=tools_tokenizer(), max_tokens=4096)
    assert report.ok and report.examples == 2 and report.skipped == []
    call = {"type": "function", "function": {"name": "hive_weight", "arguments": {"hive": "7"}}, "id": "c1"}
    assert report.rows[0] == {"messages": [
        {"role": "user", "content": "How heavy is hive 7?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "41.5"},
        {"role": "assistant", "content": "Hive 7 weighs 41.5 kg."}], "tools": [HIVE_TOOL]}
    assert report.rows[1]["tools"] == [HIVE_TOOL]
    # LLaMA-Factory's glaive format: function_call and observation turns
    report = load_file(write(tmp_path, "glaive.json", json.dumps([GLAIVE_ROW])), tokenizer=tools_tokenizer(),
                       max_tokens=4096)
    assert (report.format, report.examples) == ("sharegpt", 1)
    assert report.rows[0]["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "hive_weight", "arguments": {"hive": "3"}}}]}
    assert report.rows[0]["messages"][2] == {"role": "tool", "content": "35.2"}
    assert report.rows[0]["tools"] == [HIVE_TOOL]  # a bare schema is wrapped as a function


def test_the_training_dataset_gives_each_call_back_exactly(tmp_path):
    path = write(tmp_path, "calls.jsonl", jsonl(OPENAI_ROWS))
    dataset, shape, _ = load_dataset([path], tokenizer=tools_tokenizer(), max_tokens=4096)
    assert shape == "messages"
    first, second = dataset[0], dataset[1]
    assert first["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"hive": "7"}
    assert second["messages"][0] == {"role": "user", "content": "Is hive 2 heavier than 30 kg?"}
    assert second["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"hive": "2"}  # no other row's keys
    rendered = tools_tokenizer().apply_chat_template(first["messages"], tools=first["tools"], tokenize=False)
    assert '<tool_call>{"name": "hive_weight", "arguments": {"hive": "7"}}</tool_call>' in rendered


def test_tool_calls_are_refused_per_row_where_the_template_drops_them(tmp_path):
    path = write(tmp_path, "calls.jsonl", jsonl([OPENAI_ROWS[0], {"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}]))
    report = load_file(path, tokenizer=tiny_tokenizer())  # plain ChatML: no tools in the template
    assert report.examples == 1
    (skipped,) = report.skipped
    assert (skipped.line, skipped.record) == (1, 1)
    assert skipped.reason == ("message 2 of 'messages' calls a tool (field 'tool_calls'); the base's chat template "
                              "does not render tools or tool calls (it would drop them silently), so the tool calls "
                              "would be lost, or remove the tool turns to train on the rest")
    report = load_file(path)  # no tokenizer: say which check would tell
    assert "check the file with that base (--base NAME)" in report.skipped[0].reason


@pytest.mark.slow
def test_a_tool_calling_file_trains_on_a_base_whose_template_renders_tools(tmp_path, tiny_model_dir):
    base = tmp_path / "tools-base"
    shutil.copytree(tiny_model_dir, base)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = TOOLS_TEMPLATE
    tokenizer.save_pretrained(base)
    data = write(tmp_path, "calls.jsonl", jsonl(OPENAI_ROWS * 3))
    out = tmp_path / "run"
    code, _, err = ftchat_main("train", "--data", data, "--out", out, "--base", base, "--adapter", "lora",
                               "--max-steps", 2)  # `python -m ftchat train`, called in-process
    assert code == 0, err[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["summary"]["shape"], status["summary"]["skipped"]) == ("done", "messages", 0)
