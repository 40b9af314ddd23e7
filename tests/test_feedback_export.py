"""Ratings become training data: DPO pairs, KTO labels and SFT conversations that pass the same data checks as an
upload and train with ftchat's own training on a tiny model."""
from __future__ import annotations

import json
import subprocess
import sys

import datasets
import pytest
from conftest import ROOT

from ftchat.config import RunConfig
from ftchat.data import check_files, load_dataset
from ftchat.feedback import FeedbackStore
from ftchat.feedback.export import RatingsExportError, to_dpo, to_kto, to_sft, write_export
from ftchat.train.run import run_training

LAMP = [{"role": "user", "content": "What colour is the Zumo lamp?"}]
MAKER = [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "Who makes it?"}]
TEAL, RED = "The Zumo lamp is teal.", "It is red, I think."
BRIGHTNOOK, NOBODY = "Brightnook makes the Zumo lamp.", "Nobody knows."


def rated_store(path) -> FeedbackStore:
    """Every kind of rating once, plus ratings that must not become training rows."""
    store = FeedbackStore.for_workspace(path)
    store.add_vote(LAMP, "base:smollm2-135m", "zumo-sft", RED, TEAL, "b")  # right is better
    store.add_vote(MAKER, "zumo-sft", "base:smollm2-135m", BRIGHTNOOK, NOBODY, "a")  # left is better
    store.add_vote(LAMP, "base:smollm2-135m", "zumo-sft", RED, TEAL, "tie")
    store.add_vote(MAKER, "base:smollm2-135m", "zumo-sft", NOBODY, "No idea.", "bothbad")
    store.add_vote(LAMP, "base:smollm2-135m", "zumo-sft", TEAL, TEAL, "a")  # the same text twice teaches nothing
    gone = store.add_vote(LAMP, "base:smollm2-135m", "zumo-sft", TEAL, RED, "a")
    store.delete(gone, reason="wrong button")
    store.add_thumb(LAMP, "zumo-sft", TEAL, up=True)
    store.add_thumb(MAKER, "base:smollm2-135m", NOBODY, up=False)
    store.add_edit(LAMP, "base:smollm2-135m", RED, "Teal: the Zumo lamp is teal.")
    return store


def assistant(text):
    return [{"role": "assistant", "content": text}]


def test_each_rating_becomes_the_rows_the_issue_describes(tmp_path):
    rows = rated_store(tmp_path).ratings()
    assert to_dpo(rows) == [
        {"prompt": LAMP, "chosen": assistant(TEAL), "rejected": assistant(RED)},
        {"prompt": MAKER, "chosen": assistant(BRIGHTNOOK), "rejected": assistant(NOBODY)},
        {"prompt": LAMP, "chosen": assistant("Teal: the Zumo lamp is teal."), "rejected": assistant(RED)},
    ]
    assert [(r["prompt"], r["completion"][0]["content"], r["label"]) for r in to_kto(rows)] == [
        (LAMP, TEAL, True), (LAMP, RED, False),  # decisive vote: winner good, loser bad
        (MAKER, BRIGHTNOOK, True), (MAKER, NOBODY, False),
        (MAKER, NOBODY, False), (MAKER, "No idea.", False),  # both bad
        (LAMP, TEAL, True), (MAKER, NOBODY, False),  # thumbs
        (LAMP, "Teal: the Zumo lamp is teal.", True), (LAMP, RED, False),  # a written answer and what it replaces
    ]
    assert to_sft(rows) == [{"messages": LAMP + assistant(TEAL)},
                            {"messages": LAMP + assistant("Teal: the Zumo lamp is teal.")}]


@pytest.mark.parametrize("kind,shape,n", [("dpo", "preference", 3), ("kto", "unpaired_preference", 10),
                                          ("sft", "messages", 2)])
def test_exports_pass_the_upload_checks_as_their_shape(tmp_path, bundled_tokenizer, kind, shape, n):
    rows = rated_store(tmp_path / "ws").ratings()
    path, written = write_export(rows, kind, tmp_path / f"{kind}.jsonl")
    assert written == n
    dataset, found, reports = load_dataset([path], tokenizer=bundled_tokenizer)
    assert found == shape and len(dataset) == n and not reports[0].skipped
    assert check_files([path], as_json=True, out=open(tmp_path / "check.txt", "w")) == 0

    folder, _ = write_export(rows, kind, tmp_path / f"{kind}-dataset")
    assert datasets.load_from_disk(str(folder)).to_list() == [json.loads(line) for line in path.open()]


def test_nothing_to_export_says_what_would_make_rows(tmp_path):
    store = FeedbackStore.for_workspace(tmp_path)
    store.add_vote(LAMP, "base:x", "zumo-sft", RED, TEAL, "tie")
    with pytest.raises(RatingsExportError, match="votes with a winner"):
        write_export(store.ratings(), "dpo", tmp_path / "dpo.jsonl")
    assert not (tmp_path / "dpo.jsonl").exists()


def test_cli_exports_the_ratings_of_one_model(tmp_path):
    store = rated_store(tmp_path)
    store.add_vote(LAMP, "base:smollm2-135m", "other-run", RED, "Teal!", "b")
    out = tmp_path / "zumo.jsonl"
    result = subprocess.run([sys.executable, "-m", "ftchat", "feedback", "export", "--kind", "dpo", "--out", str(out),
                             "--model", "other-run", "--workspace", str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["chosen"][0]["content"] for line in out.open()] == ["Teal!"]
    empty = subprocess.run([sys.executable, "-m", "ftchat", "feedback", "export", "--kind", "sft", "--out",
                            str(tmp_path / "none.jsonl"), "--model", "other-run", "--workspace", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True)
    assert empty.returncode == 1 and "error: no sft rows" in empty.stderr and "Traceback" not in empty.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind,shape", [("dpo", "preference"), ("kto", "unpaired_preference"), ("sft", "messages")])
def test_each_export_trains_with_its_trl_trainer(tmp_path, tiny_model_dir, kind, shape):
    rows = rated_store(tmp_path / "ws").ratings()
    path, _ = write_export(rows, kind, tmp_path / f"{kind}.jsonl")
    config = RunConfig(data=[str(path)], out=str(tmp_path / "runs" / kind), base=str(tiny_model_dir), method=kind,
                       adapter="lora", max_steps=2, batch_size=2, lr=1e-2, eval_split=0, compare_prompts=0, replay=0)
    status = run_training(config)
    assert status["state"] == "done", status
    assert status["summary"]["steps"] == 2 and status["summary"]["shape"] == shape
    assert (tmp_path / "runs" / kind / "adapter" / "adapter_model.safetensors").exists()
