"""Uploads in the app: only usable files are offered for training, reports stay small, Gradio's copies go away."""
from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
from conftest_data import jsonl

from ftchat.data import check_files
from ftchat.ui.context import REPORTS_KEPT, VERDICTS_FILE, AppContext
from ftchat.ui.context import stored_choices, unusable_reason, upload_choices
from ftchat.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
PEER_DATA = ROOT.parent / "shared" / "peer-data"


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Where is hive {i}?"},
                         {"role": "assistant", "content": f"Hive {i} stands by the birch trees."}]}


def upload(ctx: AppContext, tmp_path: Path, name: str, text: str) -> str:
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    return str(ctx.workspace.store_upload(source).path)


def context(root: Path, tokenizer) -> AppContext:
    ctx = AppContext(Workspace(root))
    ctx._tokenizer = tokenizer  # the session's bundled tokenizer: loading it again per app is slow
    return ctx


def test_unusable_uploads_are_not_offered_as_training_data(tmp_path, bundled_tokenizer):
    ctx = context(tmp_path / "ws", bundled_tokenizer)
    good = upload(ctx, tmp_path, "hives.jsonl", jsonl([chat(1), chat(2)]))
    no_answers = upload(ctx, tmp_path, "questions.jsonl", jsonl([{"messages": [{"role": "user", "content": "Hi"}]}]))
    images = upload(ctx, tmp_path, "photos.json", json.dumps([dict(chat(3), images=["hive.jpg"])]))

    assert [path for _, path in upload_choices(ctx)] == [good]
    marked = {path: label for label, path in stored_choices(ctx)}
    assert set(marked) == {good, no_answers, images}
    assert "NOT USABLE" not in marked[good]
    assert marked[no_answers].endswith("· NOT USABLE") and marked[images].endswith("· NOT USABLE")

    assert unusable_reason(ctx, [good]) is None
    reason = unusable_reason(ctx, [good, no_answers, images])
    assert "questions.jsonl: all 1 rows were skipped" in reason and "no assistant turn" in reason
    assert "photos.json: holds image/video/audio rows" in reason
    assert "hives.jsonl" not in reason

    # the verdicts outlive the app: a restarted app offers the same files without re-reading them
    saved = json.loads((ctx.workspace.uploads_dir / VERDICTS_FILE).read_text())
    assert sorted(v["ok"] for v in saved.values()) == [False, False, True]
    restarted = context(tmp_path / "ws", bundled_tokenizer)
    assert [path for _, path in upload_choices(restarted)] == [good]
    assert not restarted._reports  # answered from the saved verdicts


def test_reports_keep_a_preview_and_only_the_latest_files(tmp_path, bundled_tokenizer):
    ctx = context(tmp_path / "ws", bundled_tokenizer)
    paths = [upload(ctx, tmp_path, f"part{n}.jsonl", jsonl([chat(i) for i in range(n * 100, n * 100 + 40)]))
             for n in range(REPORTS_KEPT + 4)]
    reports = [ctx.report(p) for p in paths]
    assert all(r.ok and r.loaded.examples == 40 and len(r.loaded.rows) == 5 for r in reports)
    assert reports[0].loaded.rows[0] == chat(0)
    assert len(ctx._reports) == REPORTS_KEPT  # the oldest reports were let go
    assert ctx.report(paths[-1]) is reports[-1]  # the latest are served from memory


@pytest.mark.parametrize("name", ["train.jsonl.gz", "train.parquet", "train.arrow"])
def test_new_extensions_are_stored_with_their_full_extension(tmp_path, name):
    workspace = Workspace(tmp_path / "ws")
    source = tmp_path / name
    source.write_bytes(b"\x1f\x8b placeholder")
    stored = workspace.store_upload(source)
    assert stored.path.name.endswith(name.split(".", 1)[1]) and stored.original_name == name
    assert [f.original_name for f in workspace.uploads()] == [name]


@pytest.mark.skipif(not PEER_DATA.is_dir(), reason="../shared/peer-data is not checked out next to the project")
def test_every_peer_project_file_imports_as_expected(capsys):
    """The peer files' own check.py, its comparison unchanged, with `data check --json` run in this process."""
    spec = importlib.util.spec_from_file_location("peer_check", PEER_DATA / "check.py")
    peer_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer_check)

    def report(path):
        out = io.StringIO()
        code = check_files([str(path)], as_json=True, out=out)
        return code, json.loads(out.getvalue().splitlines()[0]), ""

    peer_check.report = report
    code = peer_check.main()
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.strip().endswith("peer files imported as expected")
