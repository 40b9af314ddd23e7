"""A user uploads broken files and broken rows: ftchat never shows a traceback, names the file,
line and field, says what would fix it, and keeps every good row usable."""

import io
import json
import os
import random

import pytest
from conftest_data import jsonl, minimal_pdf, tiny_tokenizer, write

from ftchat.data import check_files, load_file

GOOD = {"messages": [{"role": "user", "content": "Who runs Quorvane?"},
                     {"role": "assistant", "content": "The CEO of Quorvane Labs is Marisol Okonkwo."}]}


NO_TOOLS = ("tool calls train only with a base whose chat template renders tools: check the file with that base "
            "(--base NAME), or remove the tool turns to train on the rest")
EXTENSIONS = ".jsonl, .json, .csv, .txt, .md, .pdf, .parquet, .arrow (or .jsonl.gz / .json.gz)"


def failed(tmp_path, name, content, **kwargs):
    report = load_file(write(tmp_path, name, content), **kwargs)
    assert not report.ok and report.examples == 0
    assert_one_sentence(report.error, name)
    return report.error


def assert_one_sentence(error, name):
    assert error.startswith(f"{name}: "), error
    assert "\n" not in error and "Traceback" not in error
    assert error.endswith("."), error


# ---- bad files -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,content", [("train.jsonl", ""), ("train.jsonl", "\n  \n"),
                                          ("faq.csv", ""), ("notes.md", " \n"), ("paper.pdf", b"")])
def test_empty_file(tmp_path, name, content):
    assert failed(tmp_path, name, content) == f"{name}: the file is empty; add at least one training example."


def test_empty_utf16_file_with_only_a_bom(tmp_path):
    assert "the file is empty" in failed(tmp_path, "train.jsonl", b"\xff\xfe")


def test_png_renamed_to_jsonl(tmp_path):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    error = failed(tmp_path, "train.jsonl", png)
    assert error == f"train.jsonl: is a PNG image, not text; upload a {EXTENSIONS} training file."


def test_random_bytes(tmp_path):
    noise = random.Random(0).randbytes(2000)
    assert "is a binary file, not text" in failed(tmp_path, "train.jsonl", noise)


def test_pickle_is_refused_without_loading(tmp_path):
    import pickle

    data = pickle.dumps([GOOD])
    assert "Python pickle" in failed(tmp_path, "train.json", data)
    assert "unsupported file type '.pkl'" in failed(tmp_path, "train.pkl", data)


def test_non_json_jsonl(tmp_path):
    error = failed(tmp_path, "train.jsonl", "question: who runs Quorvane?\nanswer: Marisol\n")
    assert error == "train.jsonl: line 1 is not JSON (Expecting value). Each line must be one JSON object."


def test_jsonl_of_strings(tmp_path):
    error = failed(tmp_path, "train.jsonl", '"hello"\n"world"\n')
    assert error.startswith("train.jsonl: line 1 is a string, not a JSON object")


def test_invalid_json_file(tmp_path):
    error = failed(tmp_path, "train.json", '[{"messages": [}]')
    assert error.startswith("train.json: is not valid JSON (Expecting value at line 1 column 16)")


def test_json_array_of_strings(tmp_path):
    error = failed(tmp_path, "train.json", '["a", "b"]')
    assert error == "train.json: item 1 is a string, but every item must be a JSON object."


def test_json_object_with_several_lists(tmp_path):
    error = failed(tmp_path, "splits.json", json.dumps({"train": [GOOD], "test": [GOOD]}))
    assert "found keys ['test', 'train']" in error


def test_unknown_format(tmp_path):
    error = failed(tmp_path, "notes.jsonl", jsonl([{"foo": 1, "bar": 2}, {"foo": 3, "bar": 4}]))
    assert error == ("notes.jsonl: no known format — rows have fields ['bar', 'foo']; expected e.g. 'messages', "
                     "'conversations', 'instruction'/'output', 'prompt'/'completion', 'prompt'/'chosen'/'rejected'.")


def test_csv_with_unknown_columns(tmp_path):
    error = failed(tmp_path, "table.csv", "name,age\nAda,36\n")
    assert error.startswith("table.csv: no known columns — the header is ['name', 'age']; expected a prompt column")


def test_csv_with_header_only(tmp_path):
    assert "has a header but no rows" in failed(tmp_path, "faq.csv", "question,answer\n")


@pytest.mark.parametrize("name", ["model.pkl", "README", "data.xlsx"])
def test_unknown_extension(tmp_path, name):
    error = failed(tmp_path, name, "whatever")
    assert "unsupported" in error and "use .jsonl, .json, .csv, .txt, .md, .pdf, .parquet, .arrow" in error


def test_text_named_parquet_is_not_a_readable_parquet_file(tmp_path):
    assert "is not a readable Parquet file" in failed(tmp_path, "train.parquet", "whatever")


def test_missing_file_and_folder(tmp_path):
    report = load_file(str(tmp_path / "nowhere.jsonl"))
    assert report.error == "nowhere.jsonl: file not found; check the path."
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    assert "is a folder" in load_file(str(folder)).error


def test_pdf_without_text(tmp_path):
    error = failed(tmp_path, "scan.pdf", minimal_pdf([]))
    assert error.startswith("scan.pdf: the PDF has no extractable text")
    assert "OCR" in error


def test_text_file_renamed_pdf(tmp_path):
    assert failed(tmp_path, "notes.pdf", "just text, not a PDF").startswith("notes.pdf: could not be read as a PDF")


def test_latin1_text_is_asked_to_be_resaved(tmp_path):
    error = failed(tmp_path, "faq.csv", "question,answer\nCaf\xe9?,Oui.\n".encode("latin-1"))
    assert error == "faq.csv: is not UTF-8 text (byte 0xe9 at offset 19); re-save it as UTF-8."


def test_deeply_nested_json_does_not_crash(tmp_path):
    assert "nested too deeply" in failed(tmp_path, "deep.json", "[" * 100000 + "]" * 100000)


# ---- bad rows --------------------------------------------------------------------------------

def test_bad_rows_are_skipped_with_their_line_and_reason(tmp_path):
    lines = [
        GOOD,                                                                      # 1
        '{"messages": [{"role": "user", "content": "trunc',                         # 2 truncated JSON
        {"messages": [{"role": "user", "content": "Weather?"},                      # 3 unknown role
                      {"role": "tool", "content": "{}"}, {"role": "assistant", "content": "Sunny."}]},
        {"messages": [{"role": "user", "content": "Hello?"}]},                     # 4 no assistant turn
        {"messages": [{"role": "user", "content": ""},                             # 5 empty content
                      {"role": "assistant", "content": "Hi."}]},
        {"conversation": []},                                                      # 6 missing field
        {"messages": [{"role": "user", "content": "x" * 5000},                     # 7 over-long
                      {"role": "assistant", "content": "ok"}]},
        GOOD,                                                                      # 8
    ]
    text = jsonl(lines[:5]) + "\n" + jsonl(lines[5:])  # a blank line is not a row: 6..8 become 7..9
    report = load_file(write(tmp_path, "train.jsonl", text), max_tokens=512)
    assert report.ok and report.format == "openai" and report.examples == 2
    assert [(s.line, s.reason) for s in report.skipped] == [
        (2, "not JSON (Unterminated string starting at column 43)"),
        (3, "message 2 of 'messages' is a tool result (role 'tool'); " + NO_TOOLS),
        (4, "no assistant turn"),
        (5, "empty content in message 1 (user)"),
        (7, "missing field 'messages'"),
        (8, "too long: 5002 characters > 4096 (max_tokens 512 x 8 without a tokenizer)"),
    ]


def test_over_long_rows_in_tokens(tmp_path):
    tokenizer = tiny_tokenizer()
    long_row = {"messages": [{"role": "user", "content": "Bees? " * 300}, {"role": "assistant", "content": "Yes."}]}
    report = load_file(write(tmp_path, "train.jsonl", jsonl([GOOD, long_row])), tokenizer=tokenizer, max_tokens=100)
    assert report.examples == 1 and report.skipped[0].line == 2
    assert report.skipped[0].reason.endswith("tokens > 100")


def test_bad_rows_in_other_formats(tmp_path):
    sharegpt = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "function_call", "value": "x"}]},
                {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    report = load_file(write(tmp_path, "share.json", json.dumps(sharegpt)))
    assert [(s.line, s.record, s.reason) for s in report.skipped] == [
        (1, 1, "message 2 of 'conversations' calls a tool ('function_call' turn); " + NO_TOOLS)]

    alpaca = [{"instruction": "Hi", "output": ""}, {"instruction": "Hi", "output": "Hello"}, {"instruction": "Hi"}]
    report = load_file(write(tmp_path, "alpaca.json", json.dumps(alpaca, indent=1)))
    # a JSON array's skipped row names the line of the file where it starts, and its record number
    assert [(s.line, s.record, s.reason) for s in report.skipped] == [
        (2, 1, "empty content in field 'output'"), (10, 3, "missing field 'output'")]

    kto = [{"prompt": "CEO?", "completion": "Marisol.", "label": "maybe"},
           {"prompt": "CEO?", "completion": "Marisol.", "label": "👍"}]
    report = load_file(write(tmp_path, "kto.jsonl", jsonl(kto)))
    assert [(s.line, s.reason) for s in report.skipped] == [(1, "label 'maybe' is not a yes/no value; use true/false")]

    dpo = [{"prompt": "CEO?", "chosen": "Marisol.", "rejected": ""},
           {"prompt": [{"role": "assistant", "content": "Hi"}], "chosen": "a", "rejected": "b"},
           {"prompt": "CEO?", "chosen": "Marisol.", "rejected": "Bob."}]
    report = load_file(write(tmp_path, "dpo.jsonl", jsonl(dpo)))
    assert [(s.line, s.reason) for s in report.skipped] == [
        (1, "empty content in field 'rejected'"), (2, "'prompt' must end with a user turn")]


def test_csv_bad_rows_count_the_header_as_line_one(tmp_path):
    text = "question,answer\nWho runs Quorvane?,Marisol Okonkwo.\nWhere?,\n,Tromsø\nA,B,C\nWhen?,2017.\n"
    report = load_file(write(tmp_path, "faq.csv", text))
    assert report.examples == 2
    assert [(s.line, s.reason) for s in report.skipped] == [
        (3, "empty cell in column 'answer'"), (4, "empty cell in column 'question'"),
        (5, "has 3 cells but the header names 2 columns")]


def test_mostly_bad_lines_still_detect_the_format_from_the_good_ones(tmp_path):
    text = "not json\n{broken\n" + jsonl([GOOD]) + "still not json\n"
    report = load_file(write(tmp_path, "train.jsonl", text))
    assert report.ok and report.format == "openai" and report.examples == 1
    assert [s.line for s in report.skipped] == [1, 2, 4]


def test_all_rows_bad_is_a_file_error_that_points_at_skipped(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi"}]}] * 3
    report = load_file(write(tmp_path, "train.jsonl", jsonl(rows)))
    assert not report.ok and len(report.skipped) == 3
    assert report.error == "train.jsonl: all 3 rows were skipped: see skipped (first, line 1: no assistant turn)."


# ---- the check report ------------------------------------------------------------------------

def test_check_files_json_lines_and_exit_codes(tmp_path):
    good = write(tmp_path, "good.jsonl", jsonl([GOOD, {"messages": [{"role": "tool", "content": "x"}]}]))
    bad = write(tmp_path, "bad.jsonl", "nope\n")
    out = io.StringIO()
    assert check_files([good], as_json=True, out=out) == 0
    assert check_files([good, bad], as_json=True, out=out) == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert list(line) == ["file", "ok", "format", "shape", "examples", "skipped", "error"]
    assert lines[0] == {"file": good, "ok": True, "format": "openai", "shape": "messages", "examples": 1,
                        "skipped": [{"line": 2, "record": 2, "reason": "message 1 of 'messages' is a tool result "
                                     "(role 'tool'); " + NO_TOOLS}], "error": None}
    assert lines[2]["ok"] is False and lines[2]["error"].startswith("bad.jsonl: line 1 is not JSON")


def test_check_files_prints_to_stdout_by_default(tmp_path, capsys):
    good = write(tmp_path, "good.jsonl", jsonl([GOOD]))
    assert check_files([good], as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_check_files_readable_report_with_token_stats(tmp_path):
    tokenizer = tiny_tokenizer()
    good = write(tmp_path, "good.jsonl", jsonl([GOOD, GOOD, {"messages": [{"role": "user", "content": "?"}]}]))
    out = io.StringIO()
    assert check_files([good], as_json=False, tokenizer=tokenizer, out=out) == 0
    text = out.getvalue()
    assert "good.jsonl: ok" in text
    assert "format: openai   shape: messages   examples: 2" in text
    assert "line 3: no assistant turn" in text
    n = len(tokenizer.apply_chat_template(GOOD["messages"], tokenize=True, return_dict=False))
    assert f"tokens per example: min {n} / mean {float(n)} / p50 {n} / p95 {n} / max {n}" in text


def test_check_files_readable_report_without_tokenizer(tmp_path):
    out = io.StringIO()
    paths = [write(tmp_path, "good.jsonl", jsonl([GOOD])), write(tmp_path, "empty.csv", "")]
    assert check_files(paths, as_json=False, out=out) == 1
    text = out.getvalue()
    assert "token statistics" not in text and "skipped (no tokenizer" in text
    assert "empty.csv: NOT USABLE" in text and "error: empty.csv: the file is empty" in text


@pytest.mark.parametrize("content", [
    b"\x00" * 100, b"\xff\xfe\x00\xd8", b"[]", b"{}", b"null", b"[1, 2]", b'{"messages": 5}',
    b'{"messages": [5]}', b'{"messages": [{"role": 1, "content": []}]}', b'{"chosen": 1, "rejected": 2}',
    b'{"prompt": {"a": 1}, "completion": 3}', b'{"conversations": "x"}', b'{"text": 5}',
    b'{"chosen": [], "rejected": []}', b'{"prompt": "p", "chosen": [{"role": "user"}], "rejected": "r"}',
])
def test_load_file_never_raises(tmp_path, content):
    for name in ("odd.jsonl", "odd.json", "odd.csv"):
        report = load_file(write(tmp_path, name, content))
        assert not report.ok
        assert report.error and report.error.startswith(f"{name}: ")
        assert os.path.basename(report.file) == name


# ---- formats ftchat recognizes but does not train on: one sentence, never a lossy import -------

def test_image_rows_are_refused_not_imported_as_text(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "<image>Who is this?"},
                          {"role": "assistant", "content": "Marisol Okonkwo."}], "images": ["1.jpg"]}] * 3
    error = failed(tmp_path, "mllm_demo.json", json.dumps(rows))
    assert "image" in error and "text-only" in error
    # a lone image tag in a text file is a row the model could not see either
    report = load_file(write(tmp_path, "chat.jsonl", jsonl([GOOD, {"messages": [
        {"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Her."}]}])))
    assert report.examples == 1 and report.skipped[0].line == 2
    assert report.skipped[0].reason.startswith("message 1 (user) holds an '<image>' tag")


@pytest.mark.parametrize("name, rows, words", [
    ("prm.jsonl", [{"prompt": "9.8 or 9.11?", "completions": ["0.8 > 0.11.", "So 9.11."], "labels": [True, False]}],
     ["stepwise", "process reward"]),
    ("segments.jsonl", [{"segments": [{"label": True, "text": "<s>Hi\n"}, {"label": False, "text": "bye"}]}],
     ["segments", "input_output"]),
])
def test_unsupported_training_formats_get_a_sentence(tmp_path, name, rows, words):
    error = failed(tmp_path, name, jsonl(rows))
    assert all(word in error for word in words), error


def test_llamafactory_registry_alone_is_not_training_data(tmp_path):
    registry = {"identity": {"file_name": "identity.json"}, "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en"}}
    error = failed(tmp_path, "dataset_info.json", json.dumps(registry, indent=2))
    assert "LLaMA-Factory" in error and "not training data" in error and "column mapping" in error


def test_tool_calls_are_refused_per_row_naming_record_line_and_field(tmp_path):
    call = {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "takeoff_drone", "arguments": "{\"altitude\": 100}"}}]}
    rows = [GOOD, {"messages": [{"role": "user", "content": "Take off."}, call]}, GOOD]
    report = load_file(write(tmp_path, "drone.json", json.dumps(rows, indent=1)))
    assert report.examples == 2
    (skipped,) = report.skipped
    assert (skipped.line, skipped.record) == (14, 2)  # the line of the file where record 2 starts
    assert skipped.reason.startswith("message 2 of 'messages' calls a tool (field 'tool_calls')")


def test_json_wrapper_rows_name_the_line_where_each_starts(tmp_path):
    text = '{"data": [\n  {"instruction": "Hi", "output": "Hello"},\n\n  {"instruction": "Bye"}\n]}\n'
    report = load_file(write(tmp_path, "wrapped.json", text))
    assert [(s.line, s.record, s.reason) for s in report.skipped] == [(4, 2, "missing field 'output'")]


def test_a_gz_that_is_not_gzip_and_a_damaged_parquet(tmp_path):
    assert "not gzip-compressed" in failed(tmp_path, "train.jsonl.gz", jsonl([GOOD]))
    assert "not a readable Parquet file" in failed(tmp_path, "train.parquet", b"PAR1" + bytes(100) + b"PAR1")
    assert "Parquet file (name it .parquet)" in failed(tmp_path, "train.jsonl", b"PAR1" + bytes(100))


def test_an_over_long_line_is_skipped_without_reading_it_whole(tmp_path, monkeypatch):
    from ftchat.data import readers

    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1000)
    long_row = {"messages": [{"role": "user", "content": "x" * 5000}, {"role": "assistant", "content": "ok"}]}
    report = load_file(write(tmp_path, "train.jsonl", jsonl([GOOD, long_row, GOOD])))
    assert report.examples == 2
    assert [(s.line, s.reason) for s in report.skipped] == [
        (2, "the line is longer than 1,000 bytes; shorten or split this example")]


# ---- big files: a report keeps a bounded part of the file ---------------------------------------

def test_a_report_keeps_a_preview_and_a_sample_not_every_row(tmp_path):
    from ftchat.data import summarize_file

    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": "Answer " * (i % 7 + 1)}]} for i in range(3000)]
    bad = [{"messages": [{"role": "user", "content": "no answer"}]}] * 1500
    report, lengths = summarize_file(write(tmp_path, "big.jsonl", jsonl(rows + bad)), keep_rows=5, sample=100)
    assert report.ok and report.examples == 3000
    assert report.rows == rows[:5]
    assert len(lengths) == 100
    assert report.skipped_count == 1500 and len(report.skipped) == 1000  # shapes.MAX_SKIPPED_KEPT
    assert report.to_json()["skipped_count"] == 1500
