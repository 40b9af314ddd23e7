"""Nothing outside the workspace, ever; bounded work; a damaged file never takes the app down (issue 18).

What a caller of the app's API, a file of imported ratings, a second `ftchat round` or a slip at the shell could try:
a model named by a rating is never loaded, trained from or hashed unless the workspace offers it; the login lockout
keys on the TCP peer; two rounds never share a name; a refused round leaves its ratings unused; no export overwrites
a file or reads a pickle; and every mistake at the shell is one sentence naming the file.
"""
from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from conftest import ftchat_main
from test_hostile import LOGIN, App, pickled_lora_run
from trained_runs import copy_run

from ftchat.feedback.store import FeedbackStore

OUTSIDE_HUB_ID = "some-org/some-model"


def chat(client, left: str, right: str):
    return client.predict("What colour is the Zumo lamp?", left, right, [], [], "", 0.0, 0.9, 8, api_name="/chat")


def workspace_with_run(root: Path, tiny_model_dir: Path, sft_run: Path) -> Path:
    """A workspace with the tiny base in models/tiny and a finished LoRA run, runs/sft, trained on it."""
    from ftchat.workspace import Workspace

    workspace = Workspace(root / "workspace")
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    run = copy_run(sft_run, workspace.runs_dir / "sft")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["base"] = str(workspace.models_dir / "tiny")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return workspace.root


def add_votes(store: FeedbackStore, winner: str, loser: str, n: int = 8) -> None:
    """n decisive votes for `winner` over `loser`, each on its own prompt: enough for a DPO round of either."""
    for i in range(n):
        store.add_vote([{"role": "user", "content": f"Question {i}?"}], winner, loser, f"Good answer {i}.",
                       f"Bad answer {i}.", "a")


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir, sft_run):
    process = App(workspace_with_run(tmp_path_factory.mktemp("hostile-paths"), tiny_model_dir, sft_run),
                  "--auth", ":".join(LOGIN))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def outsiders(tmp_path_factory, tiny_model_dir, sft_run) -> dict[str, Path]:
    """A real model folder and a real finished run, both outside the app's workspace."""
    root = tmp_path_factory.mktemp("outside")
    model = root / "elsewhere" / "model"
    shutil.copytree(tiny_model_dir, model)
    return {"model": model, "run": copy_run(sft_run, root / "other-runs" / "foreign")}


# -- 1. a round trains only from a model the workspace offers ----------------------------------------------------

def test_a_round_from_imported_ratings_never_starts_from_a_model_outside_the_workspace(app, outsiders, tmp_path):
    from gradio_client import handle_file

    from ftchat.feedback.rounds import round_sources
    from ftchat.serve import create_app

    hostile = ["base:" + str(outsiders["model"]), str(outsiders["run"]), "base:" + OUTSIDE_HUB_ID,
               str(app.workspace / "runs" / ".." / ".." / "other-runs" / "foreign")]
    battles = [{"model_a": hostile[i % 2], "model_b": hostile[2 + i % 2], "winner": "model_a",
                "conversation_a": [{"role": "user", "content": f"Question {i}?"},
                                   {"role": "assistant", "content": f"Good answer {i}."}],
                "conversation_b": [{"role": "user", "content": f"Question {i}?"},
                                   {"role": "assistant", "content": f"Bad answer {i}."}]} for i in range(32)]
    battle_file = tmp_path / "battles.jsonl"
    battle_file.write_text("".join(json.dumps(b) + "\n" for b in battles))
    client = app.client()
    assert "32 rating(s) imported" in client.predict([handle_file(str(battle_file))], api_name="/import_ratings")

    round_picker = client.predict("", "", "", "", "", False, None, None, "dpo", api_name="/refresh_feedback")[10]
    assert round_picker["choices"] == [] and round_picker["value"] is None, f"the Feedback tab offers {round_picker}"
    assert round_sources(FeedbackStore.for_workspace(app.workspace), app.workspace) == []
    runs_before = sorted(p.name for p in (app.workspace / "runs").iterdir())
    for name in hostile:
        _, message = client.predict(name, "dpo", 1, api_name="/start_round")
        assert message.startswith("⚠") and ("not a base this workspace offers" in message
                                            or "no such run in this workspace" in message), (name, message)
    assert sorted(p.name for p in (app.workspace / "runs").iterdir()) == runs_before, "no round was started"

    offered = "base:" + str(app.workspace / "models" / "tiny")
    for name in hostile:
        with pytest.raises(Exception, match="not a model this workspace offers"):
            chat(client, offered, name)
    from fastapi.testclient import TestClient

    served = TestClient(create_app(app.workspace / "runs"))
    ids = {m["id"] for m in served.get("/v1/models").json()["data"]}
    assert "sft" in ids and not ids & set(hostile)
    for name in hostile:
        answer = served.post("/v1/chat/completions", json={"model": name, "messages": [
            {"role": "user", "content": "hi"}], "max_tokens": 2})
        assert answer.status_code == 404, (name, answer.text)


# -- 2. a rating made in the app names only a model the workspace offers ------------------------------------------

def test_the_thumb_api_stores_only_models_the_workspace_offers(app, outsiders):
    client = app.client()
    history = [{"role": "user", "content": "What colour is the Zumo lamp?"},
               {"role": "assistant", "content": "Teal."}]
    hostile = ["base:/etc", "../../../../etc", "base:" + str(outsiders["model"]), str(outsiders["run"]),
               "base:" + OUTSIDE_HUB_ID, "base:" + str(app.workspace / "models")]
    for model in hostile:
        with pytest.raises(Exception, match="not a model this workspace offers"):
            client.predict("left", 1, True, history, model, "", api_name="/thumb")
    thumbs = client.predict("", "", "", "thumb", "", api_name="/ratings")
    assert [row[5] for row in thumbs] == [], "nothing was stored"

    offered = ["base:" + str(app.workspace / "models" / "tiny"), str(app.workspace / "runs" / "sft")]
    ids = [client.predict("right", 1, False, history, model, "", api_name="/thumb") for model in offered]
    stored = {r["id"]: r for r in FeedbackStore.for_workspace(app.workspace).ratings(kind="thumb")}
    assert [stored[i]["model_a"] for i in ids] == [offered[0], "sft"]
    assert all(stored[i]["hash_a"] for i in ids), "an offered model's weights are hashed"


# -- beyond the list: the Train tab's plan reads only offered bases ----------------------------------------------

def test_the_plan_api_does_not_read_a_base_outside_the_workspace(app, outsiders, chats_file):
    from ftchat.workspace import Workspace

    upload = str(Workspace(app.workspace).store_upload(chats_file).path)
    client = app.client()
    offered = client.predict([upload], str(app.workspace / "models" / "tiny"), "sft", "lora", None, None, 4, 2048,
                             api_name="/plan")
    assert offered.startswith("**Plan:** ≈"), offered
    outside = client.predict([upload], str(outsiders["model"]), "sft", "lora", None, None, 4, 2048,
                             api_name="/plan")
    assert "≈" not in outside and "not a base this workspace offers" in outside, outside


# -- 3. the login lockout keys on the TCP peer ---------------------------------------------------------------------

def login(url: str, password: str, forwarded_for: str) -> int:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    body = urllib.parse.urlencode({"username": LOGIN[0], "password": password})
    connection.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                "X-Forwarded-For": forwarded_for})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


def test_x_forwarded_for_does_not_get_around_the_login_lockout(tmp_path):
    app = App(tmp_path / "workspace", "--auth", ":".join(LOGIN))
    try:
        codes = [login(app.url, f"guess-{i}", f"203.0.113.{i}") for i in range(8)]
        assert codes[:5] == [400] * 5 and set(codes[5:]) == {429}, codes
        assert login(app.url, LOGIN[1], "203.0.113.99") == 429, "the right password waits too"
    finally:
        app.stop()


# -- 11, 12. rounds ----------------------------------------------------------------------------------------------

def test_two_rounds_chosen_before_either_trains_get_their_own_names_and_data(tmp_path, tiny_model_dir, sft_run):
    from ftchat.feedback.rounds import next_round_config

    workspace = workspace_with_run(tmp_path, tiny_model_dir, sft_run)
    add_votes(FeedbackStore.for_workspace(workspace), "sft", "base:" + str(workspace / "models" / "tiny"))
    first = next_round_config(workspace, "sft", "dpo", max_steps=1)
    second = next_round_config(workspace, "sft", "dpo", max_steps=1)
    assert Path(first.out).name == "sft-r1-dpo" and Path(second.out).name == "sft-r1-dpo-2"
    assert first.data != second.data
    assert Path(first.out).is_dir() and Path(second.out).is_dir(), "each name is claimed when it is chosen"


def test_two_round_names_claimed_at_once_never_collide(tmp_path):
    from ftchat.feedback.rounds import claim_round_name

    runs_root = tmp_path / "runs"
    names, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        names.append(claim_round_name("sft", "dpo", runs_root, reward_model=True))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 8, names
    assert sorted(p.name for p in runs_root.iterdir()) == sorted(names + [f"{n}-rm" for n in names])


def test_a_round_that_fails_its_base_check_leaves_its_ratings_unused(tmp_path, tiny_model_dir, sft_run):
    workspace = workspace_with_run(tmp_path, tiny_model_dir, sft_run)
    store = FeedbackStore.for_workspace(workspace)
    add_votes(store, "sft", "base:" + str(workspace / "models" / "tiny"))
    shutil.rmtree(workspace / "models" / "tiny")  # the base the run was trained on is gone
    code, _, err = ftchat_main("round", "--from", "sft", "--method", "dpo", "--max-steps", "1",
                               "--workspace", workspace)
    one_sentence(code, err, str(workspace / "models" / "tiny"))
    assert store.unused_count() == 8 and store.rounds_used() == []
    assert sorted(p.name for p in (workspace / "runs").iterdir()) == ["sft"], "no round folder is left behind"


# -- 13. exports never overwrite ------------------------------------------------------------------------------------

def test_two_rating_exports_in_the_same_second_keep_both(tmp_path):
    from ftchat.feedback.export import export_ratings

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    add_votes(store, "sft", "base:tiny", n=2)
    first = export_ratings(store.ratings(), "dpo", tmp_path / "exports")
    add_votes(store, "sft", "base:tiny", n=1)
    second = export_ratings(store.ratings(), "dpo", tmp_path / "exports")
    assert first[0] != second[0] and first[2] != second[2]
    assert len(first[0].read_text().splitlines()) == 2 and len(second[0].read_text().splitlines()) == 3


def test_rating_exports_at_once_each_get_their_own_file(tmp_path):
    from ftchat.feedback.export import export_ratings

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    add_votes(store, "sft", "base:tiny", n=2)
    rows, paths, start = store.ratings(), [], threading.Barrier(6)

    def export():
        start.wait()
        paths.append(export_ratings(rows, "ratings", tmp_path / "exports")[0])

    threads = [threading.Thread(target=export) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 6, paths


def test_export_gguf_onto_an_existing_file_is_refused_unless_forced(tmp_path, sft_run):
    target = tmp_path / "mine.gguf"
    target.write_text("my own file")
    code, _, err = ftchat_main("export", "--run", sft_run, "--gguf", target)
    one_sentence(code, err, str(target))
    assert "--force" in err
    assert target.read_text() == "my own file"
    code, out, err = ftchat_main("export", "--run", sft_run, "--gguf", target, "--force")
    assert code == 0, err
    assert target.read_bytes()[:4] == b"GGUF"


# -- 14. no pickles --------------------------------------------------------------------------------------------------

def test_export_adapter_of_a_pickled_adapter_is_refused(tmp_path, tiny_model_dir, chats_file):
    run = pickled_lora_run(tmp_path / "runs", "pickled", tiny_model_dir, chats_file)
    code, _, err = ftchat_main("export", "--run", run, "--adapter", tmp_path / "out")
    assert code == 1 and "adapter_model.bin" in err and "safetensors" in err, err
    assert not (tmp_path / "out").exists()


# -- 15. one sentence naming the file, never a traceback ---------------------------------------------------------

def one_sentence(code: int, err: str, names: str) -> None:
    """Exit 1 with one line `error: ...` that names the file (a model's loading bars may come before it)."""
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert names in errors[0], err


def test_a_damaged_feedback_database_is_one_sentence(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "feedback.sqlite").write_bytes(b"this is not a database, it is a damaged file" * 100)
    for command in (["feedback", "leaderboard"], ["feedback", "export", "--kind", "dpo", "--out", tmp_path / "x.jsonl"],
                    ["round", "report", "sft"]):
        code, _, err = ftchat_main(*command, "--workspace", workspace)
        one_sentence(code, err, str(workspace / "feedback.sqlite"))


def test_feedback_export_onto_an_existing_file_is_refused(tmp_path):
    workspace = tmp_path / "workspace"
    add_votes(FeedbackStore.for_workspace(workspace), "sft", "base:tiny", n=2)
    target = tmp_path / "pairs.jsonl"
    target.write_text("my own pairs\n")
    code, _, err = ftchat_main("feedback", "export", "--kind", "dpo", "--out", target, "--workspace", workspace)
    one_sentence(code, err, str(target))
    assert target.read_text() == "my own pairs\n"
    code, _, err = ftchat_main("feedback", "export", "--kind", "dpo", "--out", target, "--workspace", workspace,
                               "--force")
    assert code == 0 and len(target.read_text().splitlines()) == 2, err


def test_export_merged_of_a_wrong_shaped_adapter_is_one_sentence(tmp_path, sft_run):
    run = copy_run(sft_run, tmp_path / "runs" / "reshaped")
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    config["r"] = config["r"] * 2  # the weights were saved at the other rank
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    code, _, err = ftchat_main("export", "--run", run, "--merged", tmp_path / "merged")
    one_sentence(code, err, str(run / "adapter"))


def test_export_adapter_onto_the_runs_own_adapter_is_refused(tmp_path, sft_run):
    run = copy_run(sft_run, tmp_path / "runs" / "own")
    before = {p.name: p.read_bytes() for p in (run / "adapter").iterdir() if p.is_file()}
    for extra in ([], ["--force"]):
        code, _, err = ftchat_main("export", "--run", run, "--adapter", run / "adapter", *extra)
        one_sentence(code, err, str(run / "adapter"))
    assert {p.name: p.read_bytes() for p in (run / "adapter").iterdir() if p.is_file()} == before


def test_export_merged_onto_an_existing_file_is_refused_before_merging(tmp_path, sft_run):
    run = copy_run(sft_run, tmp_path / "runs" / "merge-me")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["base"] = str(tmp_path / "base-deleted-since")  # a merge would fail on this first
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    target = tmp_path / "model.safetensors"
    target.write_text("my own file")
    started = time.monotonic()
    code, _, err = ftchat_main("export", "--run", run, "--merged", target)
    one_sentence(code, err, str(target))
    assert "base-deleted-since" not in err, "the target is checked before the merge starts"
    assert target.read_text() == "my own file" and time.monotonic() - started < 30


# -- beyond the list: two Starts with one name ----------------------------------------------------------------------

def test_two_starts_with_the_same_name_train_in_folders_of_their_own(tmp_path, tiny_model_dir, chats_file):
    from ftchat.train.form import config_from_form
    from ftchat.workspace import Workspace

    workspace = Workspace(tmp_path / "workspace")
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    upload = str(workspace.store_upload(chats_file).path)

    def start(**extra):
        return config_from_form(workspace, [upload], "sft", {upload: "messages"}, name="zumo",
                                base=str(workspace.models_dir / "tiny"), adapter="lora", max_steps=1, **extra)

    first, second = start(), start()
    assert [Path(first.out).name, Path(second.out).name] == ["zumo", "zumo-2"]
    with pytest.raises(Exception, match="lr"):
        start(lr=float("inf"))
    assert sorted(p.name for p in workspace.runs_dir.iterdir()) == ["zumo", "zumo-2"], "a refused Start leaves none"
