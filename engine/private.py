"""Conversation data on disk is private: folders 0700, files 0600, whatever the umask.

A spill file holds a conversation's token ids (its text), the session database holds
the text itself: on a shared machine nobody else may read either (as shells do for
their history files).
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path, *, ours: bool = False) -> Path:
    """Create ``path`` (and missing parents), making every folder created 0700.

    ``ours``: the folder belongs to blockpool (e.g. the default data folder), so an
    existing one is made 0700 too; a folder the user named (``--data-dir .``) is not
    changed, only what is created in it.
    """
    path = Path(path)
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for folder in created + ([path] if ours else []):
        os.chmod(folder, DIR_MODE)
    return path


def private_file(path: str | Path) -> Path:
    """Make sure ``path`` exists with mode 0600 (created empty when missing)."""
    path = Path(path)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private_text(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to a new 0600 file; FileExistsError unless ``overwrite``."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), FILE_MODE)
        out.write(text)
    return path


def free_name(path: str | Path) -> Path:
    """``path`` when nothing is there, else ``<stem>-2<suffix>``, ``-3``…: never an existing file."""
    path = Path(path)
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
