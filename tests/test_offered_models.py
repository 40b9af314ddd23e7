"""One list of models: the Chat tab, its API and `ftchat serve` offer what ChatEngine.choices offers, no more."""
from __future__ import annotations

import shutil

from test_feedback_rounds import fake_run

from ftchat.serve import model_ids
from ftchat.ui.context import AppContext
from ftchat.workspace import Workspace


def test_the_chat_tab_and_serve_offer_the_same_models(tmp_path, tiny_model_dir):
    workspace = Workspace(tmp_path / "ws")
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    run = fake_run(workspace.runs_dir, "zumo-sft", base=str(workspace.models_dir / "tiny"))
    fake_run(workspace.runs_dir, "scorer")  # a finished run that does not chat...
    (workspace.runs_dir / "scorer" / "config.yaml").write_text(
        (workspace.runs_dir / "scorer" / "config.yaml").read_text().replace("method: sft", "method: reward"))
    fake_run(workspace.runs_dir, "unfinished", state="running")  # ...and one still training: neither is offered
    chat = AppContext(workspace).engine().choices()
    assert chat == [("base · SmolLM2-135M-Instruct (bundled)", "base:smollm2-135m"),
                    ("base · models/tiny", "base:" + str(workspace.models_dir / "tiny")),
                    ("run · zumo-sft · sft/lora", str(run))]
    from ftchat.serve import create_app

    served = create_app(workspace.runs_dir)  # serve builds its own engine for the same workspace
    engine = next(r.endpoint for r in served.routes if getattr(r, "path", "") == "/v1/models")
    ids = [m["id"] for m in engine()["data"]]
    assert ids == list(model_ids(AppContext(workspace).engine())) == \
        ["base:smollm2-135m", "base:" + str(workspace.models_dir / "tiny"), "zumo-sft"]
    assert AppContext(workspace).engine().default_pair() == ("base:" + str(workspace.models_dir / "tiny"), str(run))
