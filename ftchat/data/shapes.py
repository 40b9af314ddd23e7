"""The data shapes ftchat trains on. Every format converter in ftchat.data ends in one of these.

The names follow TRL's dataset formats; each normalized row holds exactly the listed columns.

- ``messages`` (SFT, conversational)::

      {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}

  At least one assistant turn; no message has empty content.

- ``prompt_completion`` (SFT, raw strings)::

      {"prompt": str, "completion": str}

  ``load_dataset`` turns these into ``messages`` (see ``to_messages``) so SFT sees conversations.

- ``preference`` (DPO and friends, conversational)::

      {"prompt": [message, ...],                          # ends with a user turn
       "chosen": [{"role": "assistant", "content": str}],
       "rejected": [{"role": "assistant", "content": str}]}

- ``unpaired_preference`` (KTO, conversational)::

      {"prompt": [message, ...], "completion": [{"role": "assistant", "content": str}], "label": bool}

- ``prompt_only`` (GRPO / RLOO: the trainer generates the answers and a reward scores them)::

      {"prompt": [message, ...]}                          # ends with a user turn

- ``text`` (continued pre-training)::

      {"text": str}
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHAPES = ("messages", "prompt_completion", "preference", "unpaired_preference", "prompt_only", "text")
ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A training file or set of files cannot be used; the message is one sentence naming the file.
    load_dataset sets `reports` to the per-file LoadedFile reports when it has them."""

    reports: list | None = None


class RowError(ValueError):
    """One row cannot be used; the message is the reason shown next to its line number."""


@dataclass
class Skipped:
    line: int  # the line of the file where the row starts (the row number in a Parquet/Arrow table)
    reason: str
    record: int | None = None  # the row's number among the file's records (1-based)


MAX_SKIPPED_KEPT = 1000  # a report keeps this many skipped rows; skipped_count has them all


@dataclass
class LoadedFile:
    """What loading one file produced: normalized rows, the rows skipped and why, or an error.

    `rows` holds every row when loaded for training; a report (ftchat.data.check.summarize_file) keeps
    only the first few, and `examples` counts them all."""

    file: str
    format: str | None = None
    shape: str | None = None
    rows: list[dict] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    error: str | None = None
    count: int = 0  # usable examples
    skipped_count: int = 0
    warnings: list[str] = field(default_factory=list)  # usable, but worth a look (e.g. {{name}} placeholders)

    @property
    def ok(self) -> bool:
        return self.error is None and self.count > 0

    @property
    def examples(self) -> int:
        return self.count

    def skip(self, skipped: Skipped) -> None:
        self.skipped_count += 1
        if len(self.skipped) < MAX_SKIPPED_KEPT:
            self.skipped.append(skipped)

    def to_json(self) -> dict:
        out = {
            "file": self.file,
            "ok": self.ok,
            "format": self.format,
            "shape": self.shape,
            "examples": self.examples,
            "skipped": [{"line": s.line, "record": s.record, "reason": s.reason} for s in self.skipped],
            "error": self.error,
        }
        if self.skipped_count > len(self.skipped):
            out["skipped_count"] = self.skipped_count
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}
