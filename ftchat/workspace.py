"""The app's folder on disk: uploaded data, extra base models and run folders, so everything survives a restart.

WORKSPACE/
  uploads/   training files, stored as <safe-name>-<sha256[:10]><ext>; the same bytes are stored once
  models/    base model folders (Hugging Face layout) offered as bases next to the bundled one
  runs/      one folder per training run (see ftchat.runs)
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ftchat import models
from ftchat.config import file_sha256

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "data"
# bench/upload_limits.py, 2026-11-28: the upload path (store + report with the bundled tokenizer) costs ~0.5 CPU
# seconds per MB of JSONL conversations, so ~60 MB is read in 30 s on a free core; 50 MB leaves room for longer rows.
DEFAULT_MAX_UPLOAD_MB = 50.0
# What ftchat.data reads (kept here too so this module imports without the data layer).
DATA_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".md", ".pdf", ".parquet", ".arrow", ".jsonl.gz",
                   ".json.gz")
# Short descriptions of the shipped samples; any other file under data/ is offered with its name only.
SAMPLE_NOTES = {
    "quorvane_support.jsonl": "support conversations (SFT)",
    "quorvane_preferences.jsonl": "chosen / rejected pairs (DPO)",
    "quorvane_feedback_kto.jsonl": "answers rated good / bad (KTO)",
    "quorvane_handbook.md": "a document (SFT on text)",
    "alpaca.json": "Alpaca instructions",
    "sharegpt.json": "ShareGPT conversations",
    "hh.jsonl": "Anthropic HH pairs",
    "pairs.csv": "CSV preference pairs",
    "prompt_completion.jsonl": "prompt / completion pairs",
}


class UploadError(ValueError):
    """An upload cannot be stored; the message says why and what to do."""


@dataclass
class StoredFile:
    path: Path
    original_name: str
    size: int
    sha256: str
    added: float

    @property
    def name(self) -> str:
        return self.path.name


def data_extension(name: str | Path) -> str:
    """A file's extension in lower case; two parts for a compressed file ('.jsonl.gz')."""
    name = Path(name).name.lower()
    ext = Path(name).suffix
    if ext == ".gz":
        ext = Path(name[:-3]).suffix + ext
    return ext


def safe_stem(name: str) -> str:
    """A file name stem made of letters, digits, '.', '_' and '-' only (no path parts, no leading dot)."""
    name = Path(name).name
    stem = name[: len(name) - len(data_extension(name))]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")
    return stem[:60] or "upload"


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


class Workspace:
    def __init__(self, root: str | Path, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB):
        self.root = Path(root).expanduser().resolve()
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        for folder in (self.uploads_dir, self.models_dir, self.runs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    # -- uploads ------------------------------------------------------------------------------------------------
    def store_upload(self, source: str | Path, original_name: str | None = None) -> StoredFile:
        """Copy a file into uploads/ under a safe name with its content hash; the same bytes are kept once."""
        source = Path(source)
        original_name = Path(original_name or source.name).name
        ext = data_extension(original_name)
        if ext not in DATA_EXTENSIONS:
            what = f"'{ext}' files" if ext else "files without an extension"
            raise UploadError(f"{original_name}: ftchat cannot train on {what}; upload {', '.join(DATA_EXTENSIONS)}.")
        size = source.stat().st_size
        if size > self.max_upload_bytes:
            raise UploadError(
                f"{original_name} is {human_size(size)}, over the upload limit of {human_size(self.max_upload_bytes)}. "
                "Split it into smaller files, or start the app with a higher --max-upload-mb."
            )
        digest = file_sha256(source)
        for existing in self.uploads_dir.glob(f"*-{digest[:10]}{ext}"):
            return self.stored_file(existing)
        target = self.uploads_dir / f"{safe_stem(original_name)}-{digest[:10]}{ext}"
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(target)  # a half-copied upload is never listed
        return self.stored_file(target)

    def stored_file(self, path: str | Path) -> StoredFile:
        """What is known of a stored upload: its original name (from the stored name), size, hash, time."""
        path = Path(path)
        try:
            stat = path.stat()
            size, added = stat.st_size, stat.st_mtime
        except OSError:  # a run's data file deleted or moved since: its name is still worth showing
            size, added = 0, 0.0
        ext = data_extension(path.name)
        stem = path.name[: len(path.name) - len(ext)]
        match = re.match(r"(.*)-([0-9a-f]{10})$", stem)
        original = (match.group(1) if match else stem) + ext
        return StoredFile(path, original, size, match.group(2) if match else "", added)

    def uploads(self) -> list[StoredFile]:
        """Stored uploads, newest first."""
        files = [p for p in self.uploads_dir.iterdir()  # hidden files are ours (e.g. the verdicts), never uploads
                 if p.is_file() and not p.name.startswith(".") and data_extension(p) in DATA_EXTENSIONS]
        return sorted((self.stored_file(p) for p in files), key=lambda f: f.added, reverse=True)

    def is_upload(self, path: str | Path) -> bool:
        try:
            return Path(path).resolve().parent == self.uploads_dir
        except OSError:
            return False

    def run_dir(self, value: str | Path | None) -> Path | None:
        """The run folder a picker value names, if it lies in runs/ (a run name or a path), else None."""
        if not value:
            return None
        path = Path(value)
        path = (path if path.is_absolute() else self.runs_dir / path).resolve()
        return path if path.parent == self.runs_dir and path.is_dir() else None

    # -- models -------------------------------------------------------------------------------------------------
    def offers_base(self, base: str) -> bool:
        """Whether a base may be trained from the app: a registry name, a model folder directly under models/, or
        a hub id. Not any other folder of this machine: the API would otherwise read whatever path it is sent."""
        base = str(base or "").strip()
        if not base:
            return False
        if models.spec_for(base) is not None:
            return True
        if os.path.isabs(base) or base.startswith((".", "~")) or "\\" in base:
            inside = Path(os.path.abspath(base)).parent.resolve() == self.models_dir
            return inside and (Path(base) / "config.json").is_file()
        parts = base.split("/")
        return len(parts) == 2 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part) for part in parts) \
            and not Path(base).exists()

    def base_label(self, base: str | None) -> str:
        """A base as people read it: a registry name as it is, a folder of models/ as models/NAME."""
        return base_label(base, self.models_dir)

    def base_choices(self) -> list[tuple[str, str]]:
        """(label, value) of every base the Train tab offers: the registry's, then the folders of models/."""
        out = [(spec.title, name) for name, spec in models.REGISTRY.items()]
        return out + [(f"workspace: models/{p.name}", str(p)) for p in self.model_folders()]

    def model_folders(self) -> list[Path]:
        """Base model folders under models/ (each holds a config.json)."""
        return sorted(p for p in self.models_dir.iterdir() if (p / "config.json").is_file())


def base_label(base: str | None, models_dir: Path) -> str:
    """A base as people read it: a registry name as it is, a folder of `models_dir` as models/NAME."""
    if not base:
        return ""
    if base in models.REGISTRY:
        return base
    path = Path(base)
    try:
        return "models/" + path.resolve().relative_to(models_dir).as_posix()
    except (ValueError, OSError):
        return path.name if path.is_absolute() else base


def sample_files() -> list[Path]:
    """The shipped sample data: data/*.jsonl|md first, then data/examples/*."""
    if not SAMPLES_DIR.is_dir():
        return []
    order = list(SAMPLE_NOTES)  # the conversations first: what a newcomer most likely wants to try

    def key(path: Path):
        return (order.index(path.name) if path.name in order else len(order), path.name)

    top = sorted((p for p in SAMPLES_DIR.iterdir() if p.is_file() and data_extension(p) in DATA_EXTENSIONS), key=key)
    examples = SAMPLES_DIR / "examples"
    more = sorted((p for p in examples.iterdir() if data_extension(p) in DATA_EXTENSIONS), key=key) \
        if examples.is_dir() else []
    return top + more


def sample_label(path: Path) -> str:
    relative = path.relative_to(SAMPLES_DIR).as_posix()
    note = SAMPLE_NOTES.get(path.name)
    return f"{relative} — {note}" if note else relative
