"""What the tabs share: the workspace, one chat engine, the bundled tokenizer and the data reports.

Everything heavy (transformers, torch) is loaded on first use, never at import, so the page answers fast.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ftchat.ui.workspace import Workspace

log = logging.getLogger("ftchat.ui")
MAX_TOKENS = 2048  # rows longer than this are reported as skipped, as `ftchat data check` does


@dataclass
class FileReport:
    """One file's validation report: the loaded rows plus token lengths under the bundled tokenizer."""

    loaded: object  # ftchat.data.LoadedFile
    lengths: list[int] = field(default_factory=list)
    counted_with: str = ""  # "tokens" or "estimated tokens" (no tokenizer)

    @property
    def ok(self) -> bool:
        return self.loaded.ok

    @property
    def shape(self) -> str | None:
        return self.loaded.shape


class AppContext:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._tokenizer = None
        self._tokenizer_error: str | None = None
        self._engine = None
        self._reports: dict[tuple[str, float], FileReport] = {}
        self._feedback = None

    def tokenizer(self):
        """The bundled model's tokenizer, or None when it cannot be loaded (token counts are then estimates)."""
        with self._lock:
            if self._tokenizer is None and self._tokenizer_error is None:
                from ftchat.models import ModelError, load_tokenizer

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
                from ftchat.chat import ChatEngine

                self._engine = ChatEngine(runs_root=self.workspace.runs_dir)
            return self._engine

    def feedback(self):
        """The workspace's ratings (WORKSPACE/feedback.sqlite)."""
        with self._lock:
            if self._feedback is None:
                from ftchat.feedback.store import FeedbackStore

                self._feedback = FeedbackStore.for_workspace(self.workspace.root)
            return self._feedback

    def report(self, path: str | Path) -> FileReport:
        """Load and check one file (cached while the file is unchanged)."""
        from ftchat.data import load_file, token_lengths

        path = Path(path)
        key = (str(path), path.stat().st_mtime if path.exists() else 0.0)
        if key not in self._reports:
            tokenizer = self.tokenizer()
            loaded = load_file(path, tokenizer=tokenizer, max_tokens=MAX_TOKENS)
            if self.workspace.is_upload(path):  # messages name the file as the user knows it, not its stored name
                original = self.workspace.stored_file(path).original_name
                if loaded.error:
                    loaded.error = loaded.error.replace(path.name, original)
                for skipped in loaded.skipped:
                    skipped.reason = str(skipped.reason).replace(path.name, original)
            lengths = token_lengths(loaded.rows, loaded.shape, tokenizer) if loaded.ok else []
            self._reports[key] = FileReport(loaded, lengths, "tokens" if tokenizer is not None else "estimated tokens")
        return self._reports[key]

    def warm(self) -> None:
        """Convert the bundled model once (the first time takes ~30 s) and load its tokenizer."""
        try:
            from ftchat.models import resolve_base

            resolve_base()
        except Exception as exc:  # the app works without it; the user sees the error when picking that base
            log.warning("could not prepare the bundled model: %s", exc)
        self.tokenizer()
