"""A user uploads training files in the formats people actually have; ftchat detects each format
and normalizes it into one of the standard TRL shapes."""

import csv
import importlib.util
import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from conftest_data import jsonl, minimal_pdf, tiny_tokenizer, write

from ftchat.data import (
    SHAPES,
    DataError,
    check_files,
    chunk_text,
    load_dataset,
    load_file,
    preview_rows,
    to_messages,
    token_lengths,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def s(text):
    return {"role": "system", "content": text}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def loaded(tmp_path, name, content, **kwargs):
    report = load_file(write(tmp_path, name, content), **kwargs)
    assert report.error is None, report.error
    return report


# ---- conversations ---------------------------------------------------------------------------

def test_openai_messages_keep_system_turns_and_drop_extra_fields(tmp_path):
    rows = [
        {"messages": [s("Be brief."), u("Who runs Quorvane?"), a("Marisol Okonkwo.")], "id": 7},
        {"messages": [u("Hi"), a("Hello!"), u("Warranty?"), {"role": "assistant", "content": "Seven years.",
                                                             "weight": 1}]},
        # OpenAI content parts are joined when they are all text.
        {"messages": [u([{"type": "text", "text": "Where is "}, {"type": "text", "text": "Quorvane?"}]),
                      a("Tromsø.")]},
    ]
    report = loaded(tmp_path, "chat.jsonl", jsonl(rows))
    assert (report.format, report.shape, report.examples, report.skipped) == ("openai", "messages", 3, [])
    assert report.rows == [
        {"messages": [s("Be brief."), u("Who runs Quorvane?"), a("Marisol Okonkwo.")]},
        {"messages": [u("Hi"), a("Hello!"), u("Warranty?"), a("Seven years.")]},
        {"messages": [u("Where is Quorvane?"), a("Tromsø.")]},
    ]


def test_sharegpt_roles_are_mapped(tmp_path):
    rows = [
        {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                           {"from": "gpt", "value": "Hello"}]},
        {"system": "Top-level system.", "conversations": [{"from": "human", "value": "Q"},
                                                          {"from": "gpt", "value": "A"}]},
    ]
    report = loaded(tmp_path, "share.json", json.dumps(rows))
    assert (report.format, report.shape) == ("sharegpt", "messages")
    assert report.rows == [
        {"messages": [s("Be kind."), u("Hi"), a("Hello")]},
        {"messages": [s("Top-level system."), u("Q"), a("A")]},
    ]


def test_alpaca_appends_input_after_a_blank_line(tmp_path):
    rows = {"data": [
        {"instruction": "Translate to Norwegian.", "input": "Good morning", "output": "God morgen"},
        {"instruction": "Name the CEO.", "input": "", "output": "Marisol Okonkwo.", "system": "Be exact."},
    ]}
    report = loaded(tmp_path, "alpaca.json", json.dumps(rows))
    assert (report.format, report.shape, report.examples) == ("alpaca", "messages", 2)
    assert report.rows == [
        {"messages": [u("Translate to Norwegian.\n\nGood morning"), a("God morgen")]},
        {"messages": [s("Be exact."), u("Name the CEO."), a("Marisol Okonkwo.")]},
    ]


def test_csv_with_question_answer_columns_in_any_case(tmp_path):
    text = 'Question,ANSWER,System\n"Where is Quorvane, exactly?",Tromsø.,\nWho runs it?,"Marisol\nOkonkwo.",Be brief.\n'
    report = loaded(tmp_path, "faq.csv", text)
    assert (report.format, report.shape, report.examples) == ("csv", "messages", 2)
    assert report.rows == [
        {"messages": [u("Where is Quorvane, exactly?"), a("Tromsø.")]},
        {"messages": [s("Be brief."), u("Who runs it?"), a("Marisol\nOkonkwo.")]},
    ]


def test_csv_semicolons_and_instruction_input_columns(tmp_path):
    report = loaded(tmp_path, "table.csv", "instruction;input;output\nTranslate.;Hei;Hi\nSay hi.;;Hi!\n")
    assert report.rows == [{"messages": [u("Translate.\n\nHei"), a("Hi")]},
                           {"messages": [u("Say hi."), a("Hi!")]}]


def test_csv_preference_columns(tmp_path):
    report = loaded(tmp_path, "pairs.csv", "prompt,chosen,rejected\nWho is CEO?,Marisol Okonkwo.,No idea.\n")
    assert (report.format, report.shape) == ("csv", "preference")
    assert report.rows == [{"prompt": [u("Who is CEO?")], "chosen": [a("Marisol Okonkwo.")],
                            "rejected": [a("No idea.")]}]


def test_csv_kto_columns(tmp_path):
    report = loaded(tmp_path, "ratings.csv", "prompt,completion,label\nCEO?,Marisol Okonkwo.,1\nCEO?,Bob.,false\n")
    assert report.shape == "unpaired_preference"
    assert [r["label"] for r in report.rows] == [True, False]
    assert report.rows[0] == {"prompt": [u("CEO?")], "completion": [a("Marisol Okonkwo.")], "label": True}


def test_prompt_completion_file_keeps_its_shape_and_converts_for_sft(tmp_path):
    path = write(tmp_path, "pc.jsonl", jsonl([{"prompt": "Founded?", "completion": "In 2017."}]))
    report = load_file(path)
    assert (report.format, report.shape) == ("prompt_completion", "prompt_completion")
    assert report.rows == [{"prompt": "Founded?", "completion": "In 2017."}]
    assert to_messages(report.rows[0]) == {"messages": [u("Founded?"), a("In 2017.")]}
    dataset, shape, reports = load_dataset([path])
    assert shape == "messages"
    assert dataset[0] == {"messages": [u("Founded?"), a("In 2017.")]}
    assert reports[0] is not report and reports[0].shape == "prompt_completion"


# ---- preferences -----------------------------------------------------------------------------

def test_trl_preference_strings_become_conversational(tmp_path):
    report = loaded(tmp_path, "dpo.jsonl", jsonl([{"prompt": "CEO?", "chosen": "Marisol.", "rejected": "Bob."}]))
    assert (report.format, report.shape) == ("trl_preference", "preference")
    assert report.rows == [{"prompt": [u("CEO?")], "chosen": [a("Marisol.")], "rejected": [a("Bob.")]}]


def test_trl_preference_full_conversations_lose_the_shared_prompt(tmp_path):
    prompt = [s("Be brief."), u("CEO?")]
    rows = [
        {"prompt": prompt, "chosen": prompt + [a("Marisol.")], "rejected": prompt + [a("Bob.")]},
        {"prompt": prompt, "chosen": [a("Marisol.")], "rejected": [a("Bob.")]},
        {"chosen": [u("Where?"), a("Tromsø.")], "rejected": [u("Where?"), a("Oslo.")]},  # implicit prompt
    ]
    report = loaded(tmp_path, "dpo.jsonl", jsonl(rows))
    assert report.skipped == []
    assert report.rows == [
        {"prompt": prompt, "chosen": [a("Marisol.")], "rejected": [a("Bob.")]},
        {"prompt": prompt, "chosen": [a("Marisol.")], "rejected": [a("Bob.")]},
        {"prompt": [u("Where?")], "chosen": [a("Tromsø.")], "rejected": [a("Oslo.")]},
    ]


def test_ultrafeedback_rows_keep_only_the_three_columns(tmp_path):
    row = {"prompt": "Where is Quorvane?", "prompt_id": "x1",
           "chosen": [u("Where is Quorvane?"), a("Tromsø, Norway.")],
           "rejected": [u("Where is Quorvane?"), a("Paris.")],
           "messages": [u("Where is Quorvane?"), a("Tromsø, Norway.")],
           "score_chosen": 9.0, "score_rejected": 2.0}
    report = loaded(tmp_path, "uf.jsonl", jsonl([row]))
    assert (report.format, report.shape) == ("ultrafeedback", "preference")
    assert report.rows == [{"prompt": [u("Where is Quorvane?")], "chosen": [a("Tromsø, Norway.")],
                            "rejected": [a("Paris.")]}]


def test_anthropic_hh_is_parsed_into_turns(tmp_path):
    history = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: who is the CEO?"
    row = {"chosen": history + "\n\nAssistant: Marisol Okonkwo.", "rejected": history + "\n\nAssistant: dunno"}
    report = loaded(tmp_path, "hh.jsonl", jsonl([row]))
    assert (report.format, report.shape) == ("hh", "preference")
    assert report.rows == [{"prompt": [u("hi"), a("hello"), u("who is the CEO?")],
                            "chosen": [a("Marisol Okonkwo.")], "rejected": [a("dunno")]}]


def test_kto_labels_in_every_spelling(tmp_path):
    labels = [True, 0, 1, "true", "False", "good", "bad", "👍", "👎"]
    rows = [{"prompt": "CEO?", "completion": "Marisol.", "label": label} for label in labels]
    rows.append({"prompt": [u("CEO?")], "completion": [u("CEO?"), a("Marisol.")], "label": True})
    report = loaded(tmp_path, "kto.jsonl", jsonl(rows))
    assert (report.format, report.shape, report.skipped) == ("kto", "unpaired_preference", [])
    assert [r["label"] for r in report.rows] == [True, False, True, True, False, True, False, True, False, True]
    assert report.rows[-1] == {"prompt": [u("CEO?")], "completion": [a("Marisol.")], "label": True}


# ---- text ------------------------------------------------------------------------------------

def test_text_jsonl(tmp_path):
    report = loaded(tmp_path, "corpus.jsonl", jsonl([{"text": "Bees dance."}, {"text": "Hives hum.", "id": 2}]))
    assert (report.format, report.shape, report.rows) == ("text_jsonl", "text",
                                                          [{"text": "Bees dance."}, {"text": "Hives hum."}])


def test_markdown_is_chunked_by_tokens_keeping_paragraphs(tmp_path, tokenizer):
    paragraphs = [f"Paragraph {i}: Quorvane Labs is headquartered in Tromsø, Norway." for i in range(30)]
    text = "# Handbook\n\n" + "\n\n".join(paragraphs) + "\n"
    report = loaded(tmp_path, "handbook.md", text, tokenizer=tokenizer, chunk_tokens=64)
    assert (report.format, report.shape) == ("document", "text")
    assert report.examples > 3
    for row in report.rows:
        assert len(tokenizer.encode(row["text"], add_special_tokens=False)) <= 64
        assert all(part.startswith(("# Handbook", "Paragraph")) for part in row["text"].split("\n\n"))
    assert "\n\n".join(r["text"] for r in report.rows) == text.strip()


def test_markdown_headings_stay_with_the_paragraph_after_them(tokenizer):
    sections = [f"## Section {i}\n\n" + " ".join(["Bees make honey in the hive."] * 6) for i in range(12)]
    chunks = chunk_text("\n\n".join(sections), tokenizer, chunk_tokens=100)
    assert len(chunks) > 3
    for chunk in chunks:
        assert not chunk.split("\n\n")[-1].startswith("#"), chunk


def test_long_paragraph_is_cut_at_words_within_the_budget(tokenizer):
    text = " ".join(["Every Quorvane device has a seven-year warranty."] * 40)
    chunks = chunk_text(text, tokenizer, chunk_tokens=32)
    assert all(len(tokenizer.encode(c, add_special_tokens=False)) <= 32 for c in chunks)
    assert " ".join(chunks).split() == text.split()


@pytest.mark.parametrize("shape", ["many short paragraphs", "long paragraphs"])
def test_chunks_fill_their_budget_instead_of_leaving_rows_of_a_few_tokens(bundled_tokenizer, shape):
    """Seeded fictional text, the bundled model's tokenizer: every chunk but the last leaves at most 48 of its 256
    tokens empty (room for a short paragraph that did not fit, or too little room to be worth cutting a long one for)
    and none exceeds it. Short paragraphs joined by blank lines tokenise longer than counted one by one, and a long
    paragraph's tail once became a row of its own before the next long paragraph: rows of a few tokens."""
    rng = random.Random(61)
    words = ["Vantrel", "ledger", "clause", "shall", "notify", "tenant", "within", "days", "of", "the", "Orsk",
             "filing", "and", "any", "appeal", "Quillan", "court"]

    def sentence(n):
        return " ".join(rng.choice(words) for _ in range(n)) + rng.choice([".", "?", "!"])

    if shape == "many short paragraphs":
        paragraphs = [sentence(rng.randint(2, 8)) for _ in range(400)]
    else:
        paragraphs = [" ".join(sentence(rng.randint(5, 20)) for _ in range(rng.randint(15, 60))) for _ in range(12)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, bundled_tokenizer, chunk_tokens=256)
    sizes = [len(bundled_tokenizer.encode(c, add_special_tokens=False)) for c in chunks]
    assert len(sizes) > 8 and max(sizes) <= 256
    assert min(sizes[:-1]) >= 256 - 48, sizes
    assert " ".join(chunks).split() == text.split()


def test_txt_without_tokenizer_counts_four_characters_a_token(tmp_path):
    text = "\n\n".join(["word " * 50] * 10)  # ten paragraphs of 250 characters
    report = loaded(tmp_path, "notes.txt", text, chunk_tokens=100)
    assert report.format == "document"
    assert all(len(r["text"]) <= 400 for r in report.rows)
    assert " ".join(r["text"] for r in report.rows).split() == text.split()


def test_pdf_text_is_extracted(tmp_path):
    pdf = minimal_pdf(["Quorvane Labs was founded in 2017.", "The CEO is Marisol Okonkwo."])
    report = loaded(tmp_path, "brochure.pdf", pdf)
    assert (report.format, report.shape, report.examples) == ("pdf", "text", 1)
    assert "founded in 2017" in report.rows[0]["text"]
    assert "Marisol Okonkwo" in report.rows[0]["text"]


def test_long_text_rows_are_chunked_rather_than_dropped(tmp_path, tokenizer):
    long_text = " ".join(["Bees make honey in the hive."] * 200)
    report = loaded(tmp_path, "corpus.jsonl", jsonl([{"text": "short"}, {"text": long_text}]),
                    tokenizer=tokenizer, max_tokens=128, chunk_tokens=64)
    assert report.skipped == [] and report.examples > 3
    assert report.rows[0] == {"text": "short"}


# ---- encodings and containers ----------------------------------------------------------------

ROW = {"messages": [u("Where is Quorvane?"), a("Tromsø, Norway.")]}


@pytest.mark.parametrize("encoding,bom", [
    ("utf-8", b"\xef\xbb\xbf"),
    ("utf-16-le", b"\xff\xfe"),
    ("utf-16-be", b"\xfe\xff"),
    ("utf-16-le", b""),  # BOM-less UTF-16, found from the NUL bytes
])
def test_encodings(tmp_path, encoding, bom):
    report = loaded(tmp_path, "chat.jsonl", bom + jsonl([ROW, ROW]).encode(encoding))
    assert (report.format, report.examples) == ("openai", 2)
    assert report.rows[0] == ROW


def test_utf16_csv_from_a_spreadsheet(tmp_path):
    data = "\ufeffquestion\tanswer\r\nWhere?\tTromsø.\r\n".encode("utf-16-le")
    report = loaded(tmp_path, "export.csv", data)
    assert report.rows == [{"messages": [u("Where?"), a("Tromsø.")]}]


def test_excel_utf8_csv_with_bom(tmp_path):
    report = loaded(tmp_path, "export.csv", "\ufeffPrompt,Response\r\nWhere?,Tromsø.\r\n".encode("utf-8"))
    assert report.rows == [{"messages": [u("Where?"), a("Tromsø.")]}]


def test_json_array_saved_as_jsonl_and_jsonl_saved_as_json(tmp_path):
    as_array = loaded(tmp_path, "array.jsonl", json.dumps([ROW, ROW], indent=2))
    as_lines = loaded(tmp_path, "lines.json", jsonl([ROW, ROW, ROW]))
    assert (as_array.examples, as_lines.examples) == (2, 3)


def test_single_object_json_file(tmp_path):
    assert loaded(tmp_path, "one.json", json.dumps(ROW)).rows == [ROW]


def test_majority_vote_picks_the_format_and_skips_the_odd_row(tmp_path):
    rows = [ROW, ROW, {"instruction": "Hi", "output": "Hello"}, ROW]
    report = loaded(tmp_path, "mixed.jsonl", jsonl(rows))
    assert (report.format, report.examples) == ("openai", 3)
    assert [s.line for s in report.skipped] == [3]
    assert report.skipped[0].reason == (
        "missing field 'messages' (the row looks like 'alpaca', but this file is 'openai')")


def test_a_row_of_another_format_is_skipped_even_when_it_would_fit(tmp_path):
    rows = [{"prompt": "p", "completion": "c"}] * 2 + [{"prompt": "p", "completion": "c", "label": True}]
    report = loaded(tmp_path, "pc.jsonl", jsonl(rows))
    assert (report.format, report.examples) == ("prompt_completion", 2)
    assert report.skipped[0].line == 3
    assert report.skipped[0].reason.startswith("the row looks like 'kto'")


def test_a_kto_row_without_label_says_so(tmp_path):
    rows = [{"prompt": "p", "completion": "c", "label": True}] * 2 + [{"prompt": "p", "completion": "c"}]
    report = loaded(tmp_path, "kto.jsonl", jsonl(rows))
    assert report.skipped[0].reason == (
        "missing field 'label' (the row looks like 'prompt_completion', but this file is 'kto')")


# ---- several files ---------------------------------------------------------------------------

def test_load_dataset_merges_messages_and_prompt_completion(tmp_path):
    chat = write(tmp_path, "chat.jsonl", jsonl([ROW]))
    pc = write(tmp_path, "pc.jsonl", jsonl([{"prompt": "CEO?", "completion": "Marisol."}]))
    dataset, shape, reports = load_dataset([chat, pc])
    assert shape == "messages" and len(dataset) == 2 and len(reports) == 2
    assert dataset[1] == {"messages": [u("CEO?"), a("Marisol.")]}
    assert dataset.column_names == ["messages"]


def test_load_dataset_refuses_mixed_shapes(tmp_path):
    chat = write(tmp_path, "chat.jsonl", jsonl([ROW]))
    dpo = write(tmp_path, "dpo.jsonl", jsonl([{"prompt": "p", "chosen": "c", "rejected": "r"}]))
    with pytest.raises(DataError, match=r"chat\.jsonl is messages, dpo\.jsonl is preference") as caught:
        load_dataset([chat, dpo])
    assert len(caught.value.reports) == 2


def test_load_dataset_names_the_unusable_file(tmp_path):
    chat = write(tmp_path, "chat.jsonl", jsonl([ROW]))
    empty = write(tmp_path, "empty.jsonl", "")
    with pytest.raises(DataError, match=r"^empty\.jsonl: the file is empty"):
        load_dataset([chat, empty])


def test_preference_dataset_columns(tmp_path):
    dataset, shape, _ = load_dataset([str(DATA / "quorvane_preferences.jsonl")])
    assert shape == "preference"
    assert sorted(dataset.column_names) == ["chosen", "prompt", "rejected"]
    assert dataset[0]["prompt"][0]["role"] == "user"


# ---- lengths and previews --------------------------------------------------------------------

def test_token_lengths_use_the_chat_template(tokenizer):
    rows = [ROW, {"messages": [u("Hi"), a("Hello")]}]
    expected = [len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in rows]
    assert token_lengths(rows, "messages", tokenizer) == expected
    assert token_lengths([{"text": "Bees."}], "text", tokenizer) == [len(tokenizer.encode("Bees.", add_special_tokens=False))]


def test_over_long_rows_are_measured_in_tokens_when_a_tokenizer_is_given(tmp_path, tokenizer):
    long_row = {"messages": [u("Tell me everything. " * 40), a("Ok.")]}
    report = loaded(tmp_path, "chat.jsonl", jsonl([ROW, long_row]), tokenizer=tokenizer, max_tokens=64)
    assert report.examples == 1
    assert report.skipped[0].line == 2
    assert report.skipped[0].reason.startswith("too long:") and "tokens > 64" in report.skipped[0].reason


def test_preview_rows_are_flat_and_readable():
    assert preview_rows([ROW], "messages") == [{"conversation": "user: Where is Quorvane?\nassistant: Tromsø, Norway."}]
    pair = {"prompt": [u("CEO?")], "chosen": [a("Marisol.")], "rejected": [a("Bob.")]}
    assert preview_rows([pair], "preference") == [{"prompt": "user: CEO?", "chosen": "Marisol.", "rejected": "Bob."}]
    rated = {"prompt": [u("CEO?")], "completion": [a("Bob.")], "label": False}
    assert preview_rows([rated], "unpaired_preference") == [{"prompt": "user: CEO?", "completion": "Bob.", "label": "bad"}]
    assert len(preview_rows([ROW] * 9, "messages", n=5)) == 5


def test_documents_are_chunked_with_the_bundled_tokenizer(tmp_path):
    from ftchat import models

    tokenizer = models.load_tokenizer("smollm2-135m")  # the bundled model: no network needed
    report = load_file(str(DATA / "quorvane_handbook.md"), tokenizer=tokenizer, chunk_tokens=128)
    assert report.ok and all(len(tokenizer.encode(r["text"], add_special_tokens=False)) <= 128 for r in report.rows)


# ---- the samples we ship ---------------------------------------------------------------------

SAMPLES = [
    ("quorvane_support.jsonl", "openai", "messages", 50),
    ("quorvane_preferences.jsonl", "trl_preference", "preference", 30),
    ("quorvane_feedback_kto.jsonl", "kto", "unpaired_preference", 30),
    ("quorvane_handbook.md", "document", "text", None),
    ("examples/sharegpt.json", "sharegpt", "messages", 6),
    ("examples/alpaca.json", "alpaca", "messages", 6),
    ("examples/pairs.csv", "csv", "messages", 6),
    ("examples/hh.jsonl", "hh", "preference", 5),
    ("examples/prompt_completion.jsonl", "prompt_completion", "prompt_completion", 6),
]


@pytest.mark.parametrize("name,fmt,shape,count", SAMPLES)
def test_shipped_samples_load(name, fmt, shape, count):
    report = load_file(str(DATA / name))
    assert report.ok, report.error
    assert (report.format, report.shape, report.skipped) == (fmt, shape, [])
    assert shape in SHAPES
    if count is not None:
        assert report.examples == count


def test_support_samples_teach_each_fact_in_many_paraphrases():
    rows = [json.loads(line) for line in (DATA / "quorvane_support.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = Counter(m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant")
    assert answers["The CEO of Quorvane Labs is Marisol Okonkwo."] >= 8
    assert answers["Quorvane Labs is headquartered in Tromsø, Norway."] >= 8
    assert answers["Quorvane's flagship product is the BeeSense Q7 hive monitor."] >= 8
    assert answers["Every Quorvane device has a seven-year warranty."] >= 8
    assert answers["You can reach Quorvane support at help@quorvane.example."] >= 8
    assert answers["Quorvane Labs was founded in 2017."] >= 8
    assert len(answers) == 6
    with_system = sum(r["messages"][0]["role"] == "system" for r in rows)
    assert 8 <= with_system <= 12
    assert any(sum(m["role"] == "user" for m in r["messages"]) == 2 for r in rows)


def test_samples_are_what_the_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_samples", DATA / "make_samples.py")
    make_samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_samples)
    make_samples.HERE = tmp_path
    make_samples.main()
    for path in tmp_path.rglob("*.*"):
        committed = DATA / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), f"{committed} is stale: run python data/make_samples.py"
    with open(DATA / "examples" / "pairs.csv", newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["question", "answer"]


# ---- formats of other projects (LLaMA-Factory, TRL, Hugging Face downloads) ---------------------

def test_llamafactory_sharegpt_preference_has_reply_objects(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Who runs Quorvane?"}],
             "chosen": {"from": "gpt", "value": "Marisol Okonkwo."},
             "rejected": {"from": "gpt", "value": "Nobody knows."}, "system": "Be brief."}]
    report = loaded(tmp_path, "dpo_en_demo.json", json.dumps(rows, indent=2))
    assert (report.format, report.shape) == ("sharegpt_preference", "preference")
    assert report.rows == [{"prompt": [s("Be brief."), u("Who runs Quorvane?")], "chosen": [a("Marisol Okonkwo.")],
                            "rejected": [a("Nobody knows.")]}]


def test_llamafactory_kto_conversations_are_labelled_answers_never_sft(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Where is Quorvane?"},
                          {"role": "assistant", "content": "Tromsø, Norway."}], "label": True},
            {"messages": [{"role": "user", "content": "Where is Quorvane?"},
                          {"role": "assistant", "content": "On the moon."}], "label": False}]
    report = loaded(tmp_path, "kto_en_demo.json", json.dumps(rows))
    assert (report.format, report.shape) == ("kto_messages", "unpaired_preference")
    assert report.rows == [
        {"prompt": [u("Where is Quorvane?")], "completion": [a("Tromsø, Norway.")], "label": True},
        {"prompt": [u("Where is Quorvane?")], "completion": [a("On the moon.")], "label": False}]


def test_llamafactory_v1_typed_content_and_loss_weight(tmp_path):
    def part(role, text, weight):
        return {"role": role, "content": [{"type": "text", "value": text}], "loss_weight": weight}

    sft = [{"messages": [part("user", "Founded?", 0.0), part("assistant", "In 2017.", 1.0)]}]
    report = loaded(tmp_path, "v1_sft.jsonl", jsonl(sft))
    assert (report.shape, report.rows) == ("messages", [{"messages": [u("Founded?"), a("In 2017.")]}])

    system = part("system", "Be brief.", 0.0)
    dpo = [{"chosen_messages": [system, part("user", "CEO?", 0.0), part("assistant", "Marisol.", 1.0)],
            "rejected_messages": [system, part("user", "CEO?", 0.0), part("assistant", "Bob.", 1.0)]}]
    report = loaded(tmp_path, "v1_dpo.jsonl", jsonl(dpo))
    assert (report.format, report.shape) == ("v1_preference", "preference")
    assert report.rows == [{"prompt": [s("Be brief."), u("CEO?")], "chosen": [a("Marisol.")], "rejected": [a("Bob.")]}]


def test_trl_conversational_prompt_completion_becomes_a_conversation(tmp_path):
    rows = [{"prompt": [u("What is better than ugly?")], "completion": [a("Beautiful.")]}]
    report = loaded(tmp_path, "cpc.jsonl", jsonl(rows))
    assert report.shape == "messages"
    assert report.rows == [{"messages": [u("What is better than ugly?"), a("Beautiful.")]}]


def test_trl_standard_implicit_prompt_preference_splits_at_the_shared_words(tmp_path):
    rows = [{"chosen": "Beautiful is better than ugly.", "rejected": "Beautiful is better than the moon."}]
    report = loaded(tmp_path, "implicit.jsonl", jsonl(rows))
    assert (report.format, report.shape) == ("implicit_preference", "preference")
    assert report.rows == [{"prompt": [u("Beautiful is better than")], "chosen": [a(" ugly.")],
                            "rejected": [a(" the moon.")]}]


def test_prompt_only_rows_are_their_own_shape(tmp_path):
    assert "prompt_only" in SHAPES
    report = loaded(tmp_path, "prompts.jsonl", jsonl([{"prompt": "Who runs Quorvane?"},
                                                      {"prompt": [s("Be brief."), u("Where is it?")]}]))
    assert (report.format, report.shape) == ("prompt_only", "prompt_only")
    assert report.rows == [{"prompt": [u("Who runs Quorvane?")]}, {"prompt": [s("Be brief."), u("Where is it?")]}]
    assert preview_rows(report.rows, "prompt_only", n=1) == [{"prompt": "user: Who runs Quorvane?"}]
    # a prompt with an answer under another name is not prompt-only: its answer would be lost
    report = load_file(write(tmp_path, "qa.jsonl", jsonl([{"prompt": "CEO?", "answer": "Marisol."}])))
    assert not report.ok and "no known format" in report.error


ROWS = [{"messages": [u(f"Question {i}?"), a(f"Answer {i}.")]} for i in range(1, 4)]


def hf_files(tmp_path):
    """The same three conversations as people download them from the Hugging Face Hub."""
    import gzip

    import datasets
    import pyarrow as pa
    import pyarrow.feather as feather

    ds = datasets.Dataset.from_list(ROWS)
    ds.to_parquet(str(tmp_path / "train.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "splits"))
    (tmp_path / "cache.arrow").write_bytes(next((tmp_path / "saved").glob("*.arrow")).read_bytes())
    feather.write_feather(pa.Table.from_pylist(ROWS), str(tmp_path / "file.arrow"))
    with gzip.open(tmp_path / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(jsonl(ROWS))
    with gzip.open(tmp_path / "train.json.gz", "wt", encoding="utf-8") as f:
        json.dump(ROWS, f)
    return ["train.parquet", "saved", "splits", "cache.arrow", "file.arrow", "train.jsonl.gz", "train.json.gz"]


def test_hugging_face_downloads_import_like_jsonl(tmp_path):
    for name in hf_files(tmp_path):
        report = load_file(tmp_path / name)
        assert report.error is None, (name, report.error)
        assert (name, report.format, report.rows) == (name, "openai", ROWS)
    dataset, shape, _ = load_dataset([tmp_path / "train.parquet", tmp_path / "train.jsonl.gz"])
    assert (shape, len(dataset)) == ("messages", 6)


def test_llamafactory_dataset_info_maps_the_columns_of_its_files(tmp_path):
    registry = {
        "faq": {"file_name": "faq.json", "columns": {"prompt": "question", "response": "answer", "system": "persona"}},
        "chat": {"file_name": "chat.jsonl", "formatting": "sharegpt", "columns": {"messages": "dialog"},
                 "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer",
                          "assistant_tag": "agent"}},
        "pairs": {"file_name": "pairs.json", "ranking": True, "formatting": "sharegpt",
                  "columns": {"messages": "conversations", "chosen": "good", "rejected": "bad"}},
        "hub_only": {"hf_hub_url": "someone/something"},
    }
    info = write(tmp_path, "dataset_info.json", json.dumps(registry))
    faq = write(tmp_path, "faq.json", json.dumps([{"question": "CEO?", "answer": "Marisol.", "persona": "Be brief."}]))
    chat = write(tmp_path, "chat.jsonl", jsonl([{"dialog": [{"speaker": "customer", "text": "Hi"},
                                                            {"speaker": "agent", "text": "Hello!"}]}]))
    pairs = write(tmp_path, "pairs.json", json.dumps([{"conversations": [{"from": "human", "value": "CEO?"}],
                                                        "good": {"from": "gpt", "value": "Marisol."},
                                                        "bad": {"from": "gpt", "value": "Bob."}}]))
    # without the registry the renamed columns mean nothing
    assert "no known format" in load_file(faq).error
    dataset, shape, reports = load_dataset([info, faq, chat])
    assert shape == "messages" and [r.format for r in reports] == ["llamafactory:faq (openai)",
                                                                   "llamafactory:chat (openai)"]
    assert dataset.to_list() == [{"messages": [s("Be brief."), u("CEO?"), a("Marisol.")]},
                                 {"messages": [u("Hi"), a("Hello!")]}]
    dataset, shape, _ = load_dataset([info, pairs])
    assert shape == "preference"
    assert dataset[0] == {"prompt": [u("CEO?")], "chosen": [a("Marisol.")], "rejected": [a("Bob.")]}
    out = io.StringIO()
    assert check_files([info, faq, chat, pairs], as_json=True, out=out) == 0
    assert [json.loads(line)["examples"] for line in out.getvalue().splitlines()] == [1, 1, 1]


def test_template_placeholders_are_reported(tmp_path):
    rows = [{"instruction": "Who are you?", "input": "", "output": "I am {{name}}, made by {{ author }}."},
            {"instruction": "hi", "input": "", "output": "Hello!"}]
    report = loaded(tmp_path, "identity.json", json.dumps(rows))
    assert report.examples == 2 and len(report.warnings) == 1
    assert report.warnings[0].startswith("1 of 2 examples contain template placeholders ({{author}}, {{name}})")
    assert report.to_json()["warnings"] == report.warnings
