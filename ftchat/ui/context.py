"""What the tabs share: the workspace, one chat engine, the bundled tokenizer and the data reports.

Everything heavy (transformers, torch) is loaded on first use, never at import, so the page answers fast.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ftchat import runs
from ftchat.chat import llamacpp
from ftchat.chat.engine import ChatEngine
from ftchat.config import RunConfig
from ftchat.data import summarize_file
from ftchat.feedback.store import FeedbackStore
from ftchat.methods import methods_for_shapes
from ftchat.models import ModelError, load_tokenizer, resolve_base
from ftchat.train.reward_model import RewardModel
from ftchat.workspace import Workspace, human_size

log = logging.getLogger("ftchat.ui")
# One length rule: the Data tab counts a row as usable only if training (max_length, same tokenizer) keeps it.
MAX_TOKENS = RunConfig().max_length
REPORTS_KEPT = 16  # full reports (a preview, skipped rows, a length sample) kept in memory, least recent dropped
VERDICTS_FILE = ".checked.json"  # in uploads/: ok / shape / error of every stored upload, kept across restarts


@dataclass
class FileReport:
    """One file's validation report: counts, skipped rows, the first rows for a preview (never all of them)
    and token lengths of (a sample of) its examples under the bundled tokenizer."""

    loaded: object  # ftchat.data.LoadedFile, its `rows` cut to a preview
    lengths: list[int] = field(default_factory=list)
    counted_with: str = ""  # "tokens" or "estimated tokens" (no tokenizer)

    @property
    def sampled(self) -> bool:
        """True when `lengths` measure a sample of the examples, not every one."""
        return len(self.lengths) < self.loaded.examples

    @property
    def ok(self) -> bool:
        return self.loaded.ok

    @property
    def shape(self) -> str | None:
        """The data shape training would see: None for a file that cannot be trained on."""
        return self.loaded.shape if self.loaded.ok else None


class AppContext:
    def __init__(self, workspace: Workspace, feedback_db: str | None = None):
        self.workspace = workspace
        self.feedback_db = feedback_db  # app.py --feedback-db: a PostgreSQL URL, or None for feedback.sqlite
        self._lock = threading.Lock()
        self._tokenizer = None
        self._tokenizer_error: str | None = None
        self._engine = None
        self._reports: OrderedDict[tuple, FileReport] = OrderedDict()
        self._verdicts: dict[str, dict] | None = None
        self._feedback = None
        self._reward_lock = threading.Lock()  # loading a reward model is slow: not under the shared lock
        self._reward_model = None  # (key, ftchat.train.reward_model.RewardModel): the last one used
        self.users = None  # ftchat.users.Users or DatabaseUsers of `app.py --users`: the raters a task can name

    def tokenizer(self):
        """The bundled model's tokenizer, or None when it cannot be loaded (token counts are then estimates)."""
        with self._lock:
            if self._tokenizer is None and self._tokenizer_error is None:
                try:
                    self._tokenizer = load_tokenizer()
                except (ModelError, OSError) as exc:
                    self._tokenizer_error = str(exc)
                    log.warning("token counts will be estimates: %s", exc)
            return self._tokenizer

    def engine(self):
        """The one ChatEngine of this app: it caches loaded models, so every pane and session shares it."""
        with self._lock:
            if self._engine is None:
                self._engine = ChatEngine(runs_root=self.workspace.runs_dir, models_root=self.workspace.models_dir)
            return self._engine

    def feedback(self):
        """The workspace's ratings (WORKSPACE/feedback.sqlite, or the --feedback-db database)."""
        with self._lock:
            if self._feedback is None:
                self._feedback = FeedbackStore.for_workspace(self.workspace.root, self.feedback_db)
            return self._feedback

    def reward_model(self, run_dir: str | Path):
        """A reward-model run of this workspace, loaded once and kept until another one (or a retrained one) is
        asked for; RewardModelError when the folder is not a finished reward model."""

        run_dir = Path(run_dir)
        adapter = runs.adapter_dir(run_dir) / "adapter_model.safetensors"
        key = (str(run_dir.resolve()), adapter.stat().st_mtime if adapter.exists() else 0.0)
        with self._reward_lock:
            if self._reward_model is None or self._reward_model[0] != key:
                self._reward_model = None  # free the old one before loading the next
                self._reward_model = (key, RewardModel(run_dir))
            return self._reward_model[1]

    def report(self, path: str | Path) -> FileReport:
        """Check one file as a stream (memory bounded whatever its size); the last REPORTS_KEPT reports
        are cached while their file is unchanged."""

        path = Path(path)
        stat = path.stat() if path.exists() else None
        key = (str(path), stat.st_mtime if stat else 0.0, stat.st_size if stat else 0)
        with self._lock:
            if key in self._reports:
                self._reports.move_to_end(key)
                return self._reports[key]
        tokenizer = self.tokenizer()
        loaded, lengths = summarize_file(path, tokenizer=tokenizer, max_tokens=MAX_TOKENS)
        if self.workspace.is_upload(path):  # messages name the file as the user knows it, not its stored name
            original = self.workspace.stored_file(path).original_name
            if loaded.error:
                loaded.error = loaded.error.replace(path.name, original)
            for skipped in loaded.skipped:
                skipped.reason = str(skipped.reason).replace(path.name, original)
        report = FileReport(loaded, lengths, "tokens" if tokenizer is not None else "estimated tokens")
        with self._lock:
            self._reports[key] = report
            while len(self._reports) > REPORTS_KEPT:
                self._reports.popitem(last=False)
        if self.workspace.is_upload(path):
            self._remember(path, report)
        return report

    def verdict(self, path: str | Path) -> dict:
        """{"ok", "shape", "error"} of a stored upload: from the verdicts kept in uploads/ when known (an
        upload's name holds its content hash, so its verdict never goes stale), else from its report."""
        path = Path(path)
        self.tokenizer()  # verdicts depend on it (rows over MAX_TOKENS are skipped)
        with self._lock:
            if self._verdicts is None:
                self._verdicts = self._read_verdicts()
            known = self._verdicts.get(self._verdict_key(path))
        if known is not None:
            return known
        report = self.report(path)
        return {"ok": report.ok, "shape": report.shape, "error": report.loaded.error}

    def _verdict_key(self, path: Path) -> str:
        return f"{path.name}|{MAX_TOKENS}|{'tokenizer' if self._tokenizer is not None else 'chars'}"

    def _read_verdicts(self) -> dict:
        try:
            return json.loads((self.workspace.uploads_dir / VERDICTS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _remember(self, path: Path, report: FileReport) -> None:
        with self._lock:
            if self._verdicts is None:
                self._verdicts = self._read_verdicts()
            self._verdicts[self._verdict_key(path)] = {"ok": report.ok, "shape": report.shape,
                                                       "error": report.loaded.error}
            target = self.workspace.uploads_dir / VERDICTS_FILE
            partial = target.with_name(target.name + ".partial")
            try:
                partial.write_text(json.dumps(self._verdicts))
                os.replace(partial, target)
            except OSError as exc:
                log.warning("could not save upload verdicts: %s", exc)

    def warm(self) -> None:
        """Convert the bundled model once (the first time takes ~30 s), load its tokenizer, and try llama.cpp (the
        chat's fast backend: a child process loads the shipped GGUF) so the first reply does not wait for it."""
        try:
            resolve_base()
        except Exception as exc:  # the app works without it; the user sees the error when picking that base
            log.warning("could not prepare the bundled model: %s", exc)
        self.tokenizer()

        llamacpp.available()


# -- what the tabs offer: the uploads that can train, and why the others cannot ------------------------------------
def upload_label(f) -> str:
    return f"{f.original_name} · {human_size(f.size)} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(f.added))}"


def upload_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """The uploads offered as training data: only those whose report is usable (an unusable file would only
    fail at Start with "allows: nothing")."""
    return [(upload_label(f), str(f.path)) for f in ctx.workspace.uploads() if ctx.verdict(f.path)["ok"]]


def stored_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """Every stored upload, for the Data tab to show its report again; unusable ones are marked."""
    return [(upload_label(f) + ("" if ctx.verdict(f.path)["ok"] else " · NOT USABLE"), str(f.path))
            for f in ctx.workspace.uploads()]


def unusable_reason(ctx: AppContext, paths: list[str]) -> str | None:
    """Why the selected training files cannot be trained on (each unusable file with its reason), or None."""
    reasons = []
    for path in paths:
        if not ctx.workspace.is_upload(path) or not Path(path).is_file():
            reasons.append(f"{Path(path).name}: is no longer in the workspace; upload it again")
            continue
        verdict = ctx.verdict(path)
        if not verdict["ok"]:
            name = ctx.workspace.stored_file(path).original_name
            reasons.append((verdict.get("error") or f"{name}: has no usable examples").rstrip("."))
    return "; ".join(reasons) + "." if reasons else None


def data_shapes(ctx: AppContext, paths: list[str]) -> dict[str, str | None]:
    """Each file's shape, None for a file that cannot train (gone, or no usable rows)."""
    shapes = {}
    for path in paths:
        verdict = ctx.verdict(path) if ctx.workspace.is_upload(path) and Path(path).is_file() else {"ok": False}
        shapes[path] = verdict.get("shape") if verdict.get("ok") else None
    return shapes


def methods_for(shapes: dict[str, str | None]) -> list[str]:
    """The methods every selected file can train with (SFT when nothing is selected yet)."""
    if not shapes:
        return ["sft"]
    return methods_for_shapes(shapes.values())
