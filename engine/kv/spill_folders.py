"""Where spill files live: the engine's default temp folder, its clean-up, and a report of sizes.

An engine given no ``spill_dir`` spills into a private ``blockpool-spill-<pid>-*`` folder
in the temp directory, removed when the engine closes (or is collected, or the process
exits). A process killed before that leaves its folder behind: the next engine sweeps
folders whose process is gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path

from engine.private import DIR_MODE
from engine.loading.paths import data_dir as default_data_dir

logger = logging.getLogger(__name__)

TEMP_PREFIX = "blockpool-spill-"
_TEMP_NAME = re.compile(rf"^{TEMP_PREFIX}(\d+)-")
_TMP_FILE = re.compile(r"^\..*\.(\d+)\.tmp\.safetensors$")


def new_temp_folder() -> Path:
    """A fresh private (0700) spill folder in the temp directory, named after this process."""
    folder = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
    os.chmod(folder, DIR_MODE)
    return folder


def open_spill_folder(owner: object, spill_dir: str | Path | None) -> tuple[Path, weakref.finalize | None]:
    """The engine's spill folder, swept of partial files, and (for the default temp folder)
    the finalizer that removes it: on ``close()``, when ``owner`` is collected, or at exit."""
    sweep_stale_temp_folders()
    folder = new_temp_folder() if spill_dir is None else Path(spill_dir)
    sweep_partial_files(folder)
    return folder, weakref.finalize(owner, remove_folder, folder) if spill_dir is None else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_temp_folders(temp_dir: str | Path | None = None) -> list[Path]:
    """Remove temp spill folders whose process has ended; returns what was removed."""
    base = Path(temp_dir) if temp_dir is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def sweep_partial_files(folder: str | Path) -> list[Path]:
    """Remove half-written spill files (``.<name>.<pid>.tmp.safetensors``) of processes gone."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TMP_FILE.match(entry.name)
        if match and not pid_alive(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def remove_folder(folder: Path) -> None:
    """Remove a temp spill folder (best effort: it is called from finalizers too)."""
    shutil.rmtree(folder, ignore_errors=True)


def folder_bytes(folder: str | Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``; (0, 0) when it does not exist."""
    num_files = num_bytes = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                num_bytes += os.stat(os.path.join(root, name)).st_size
                num_files += 1
            except OSError:
                continue
    return num_files, num_bytes


def spill_locations(data_dir: str | Path | None = None) -> list[dict[str, object]]:
    """Every place spill files may be, with what it holds: for ``blockpool doctor``.

    Each entry: ``path``, ``kind`` (``sessions``: per-session folders under the data
    folder that outlive the app; ``temp``: an engine's folder in the temp directory),
    ``exists``, ``num_files``, ``num_bytes``.
    """
    sessions = Path(data_dir) if data_dir is not None else default_data_dir()
    places: list[tuple[Path, str]] = [(sessions / "spill", "sessions")]
    try:
        places += [(p, "temp") for p in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*") if p.is_dir()]
    except OSError:
        pass
    report = []
    for path, kind in places:
        num_files, num_bytes = folder_bytes(path)
        report.append({"path": str(path), "kind": kind, "exists": path.exists(),
                       "num_files": num_files, "num_bytes": num_bytes})
    return report


def spill_file_name(agent_id: str) -> str:
    """The name of an agent's spill file in its folder (a front end moving an agent between folders needs it)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", agent_id)[:80]
    if safe != agent_id:  # keep names that differ only in odd characters apart
        safe += "-" + hashlib.sha1(agent_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe}.safetensors"
