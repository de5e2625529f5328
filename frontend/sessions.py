"""Conversations that survive restarts: agents, messages and settings in SQLite.

Each turn is written twice: when it starts (the user's message plus an empty reply
marked ``generating``) and when it ends (the reply, its status, and the context's token
ids), each in its own transaction. A process killed mid-reply therefore leaves a reply
still marked ``generating``; opening the database marks it ``interrupted``, so it is
never mistaken for a complete one.

The database and its WAL/SHM files are private (0600, in a 0700 folder). A database
that is not one, or fails SQLite's quick check, raises ``CorruptSessionStore``; its
``move_aside()`` keeps the file (renamed, never deleted) so a new one can start.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.env import DATA_DIR as DATA_DIR_ENV
from engine.loading.paths import data_dir
from engine.private import FILE_MODE, free_name, private_dir, private_file

SCHEMA_VERSION = 3  # 2: agents.options; 3: messages.note
Status = Literal["complete", "generating", "interrupted", "cancelled", "error"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    model TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS agents (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    closed INTEGER NOT NULL DEFAULT 0,
    context_tokens BLOB NOT NULL DEFAULT x'',
    created_at REAL NOT NULL,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    finish_reason TEXT,
    created_at REAL NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_by_agent ON messages(agent_id, id);
"""


class SessionStoreError(RuntimeError):
    """The session database cannot be opened or written."""


class CorruptSessionStore(SessionStoreError):
    """The session database file is damaged or not a database at all."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"the session database {path} is damaged ({detail})")
        self.path = path

    def move_aside(self) -> Path:
        """Rename the file (and its WAL/SHM files) to ``<name>.corrupt-<time>``; returns the new path."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = free_name(self.path.with_name(f"{self.path.name}.corrupt-{stamp}"))
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
        os.replace(self.path, target)
        return target


@dataclass(frozen=True)
class Message:
    id: int
    role: Literal["user", "assistant"]
    content: str
    status: Status
    finish_reason: str | None
    note: str = ""  # a reply's figures line ("24 tok · first token 0.31 s · ..."), as shown when it ended


@dataclass(frozen=True)
class AgentRecord:
    id: int
    session_id: int
    name: str
    system_prompt: str
    closed: bool
    context_tokens: list[int]
    options: dict[str, Any] = field(default_factory=dict)  # the agent's own sampling settings


@dataclass(frozen=True)
class AgentSummary:
    """An agent as the session browser lists it: where it lived, how long it is, how it began."""

    record: AgentRecord
    model: str  # its session's model: a context (token ids) belongs to one model
    updated_at: float  # its session's last change
    num_messages: int
    first_message: str  # the user's first message ('' for none)


@dataclass(frozen=True)
class SessionRecord:
    id: int
    created_at: float
    updated_at: float
    model: str
    settings: dict[str, Any]


class SessionStore:
    """One SQLite database of sessions (default: ``<data dir>/sessions.db``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else data_dir() / "sessions.db"
        try:
            private_dir(self.path.parent, ours=path is None)
            private_file(self.path)  # SQLite gives its WAL and SHM files the database's mode
        except OSError as exc:
            raise SessionStoreError(
                f"cannot open the session database {self.path}: {exc}; set {DATA_DIR_ENV} "
                "to a writable folder"
            ) from exc
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked, unreadable: not damage
                raise SessionStoreError(f"cannot open the session database {self.path}: {exc}") from exc
            raise CorruptSessionStore(self.path, str(exc)) from exc

    def _open(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        # Columns later versions added, for files written before them (CREATE IF NOT EXISTS keeps old tables).
        self._add_missing_column("agents", "options", "TEXT NOT NULL DEFAULT '{}'")  # version 2
        self._add_missing_column("messages", "note", "TEXT NOT NULL DEFAULT ''")  # version 3
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # A reply still 'generating' when we open was cut off by a crash.
        self._db.execute("UPDATE messages SET status='interrupted' WHERE status='generating'")
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, FILE_MODE)

    def _add_missing_column(self, table: str, column: str, declaration: str) -> None:
        if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise SessionStoreError(f"cannot write the session database {self.path}: {exc}") from exc

    # -- sessions and agents -------------------------------------------------------

    def new_session(self, model: str, settings: dict[str, Any] | None = None) -> int:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO sessions (created_at, updated_at, model, settings) VALUES (?, ?, ?, ?)",
                (now, now, model, json.dumps(settings or {})),
            )
        return int(cur.lastrowid)

    def last_session(self) -> SessionRecord | None:
        row = self._db.execute("SELECT * FROM sessions ORDER BY updated_at DESC, id DESC LIMIT 1").fetchone()
        return None if row is None else _session(row)

    def session(self, session_id: int) -> SessionRecord:
        row = self._db.execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
        if row is None:
            raise SessionStoreError(f"no session {session_id} in {self.path}")
        return _session(row)

    def sessions(self) -> list[SessionRecord]:
        return [_session(r) for r in self._db.execute("SELECT * FROM sessions ORDER BY id")]

    def add_agent(self, session_id: int, name: str, system_prompt: str = "") -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO agents (session_id, name, system_prompt, created_at) VALUES (?, ?, ?, ?)",
                (session_id, name, system_prompt, time.time()),
            )
            self._touch(db, session_id)
        return int(cur.lastrowid)

    def rename_agent(self, agent_id: int, name: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE agents SET name=? WHERE id=?", (name, agent_id))

    def set_agent_options(self, agent_id: int, system_prompt: str, options: dict[str, Any]) -> None:
        """The agent's system prompt and its own sampling settings (its later turns use them)."""
        with self._tx() as db:
            db.execute("UPDATE agents SET system_prompt=?, options=? WHERE id=?", (system_prompt, json.dumps(options), agent_id))

    def close_agent(self, agent_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE agents SET closed=1 WHERE id=?", (agent_id,))

    def agents(self, session_id: int, *, include_closed: bool = False) -> list[AgentRecord]:
        rows = self._db.execute(
            "SELECT id, session_id, name, system_prompt, closed, context_tokens, options FROM agents "
            "WHERE session_id=? AND (closed=0 OR ?) ORDER BY id",
            (session_id, include_closed),
        )
        return [AgentRecord(r[0], r[1], r[2], r[3], bool(r[4]), _tokens(r[5]), json.loads(r[6])) for r in rows]

    def browse_agents(self, session_id: int, text: str = "", *, limit: int = 200) -> list[AgentSummary]:
        """Agents that can be reopened into session ``session_id``: its closed ones and every agent
        of the other sessions, each with at least one message, newest first; with ``text``, only those whose name or any message
        holds it (case-insensitive)."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT a.id, a.session_id, a.name, a.system_prompt, a.closed, a.context_tokens, a.options, "
            "s.model, s.updated_at, "
            "(SELECT COUNT(*) FROM messages m WHERE m.agent_id=a.id), "
            "(SELECT content FROM messages m WHERE m.agent_id=a.id AND m.role='user' ORDER BY m.id LIMIT 1) "
            "FROM agents a JOIN sessions s ON s.id=a.session_id "
            "WHERE (a.session_id<>? OR a.closed=1) AND EXISTS (SELECT 1 FROM messages m WHERE m.agent_id=a.id) "
            "AND (?='' OR a.name LIKE ? ESCAPE '\\' OR EXISTS "
            "(SELECT 1 FROM messages m WHERE m.agent_id=a.id AND m.content LIKE ? ESCAPE '\\')) "
            "ORDER BY s.updated_at DESC, a.id DESC LIMIT ?",
            (session_id, text, pattern, pattern, limit),
        )
        return [AgentSummary(AgentRecord(r[0], r[1], r[2], r[3], bool(r[4]), _tokens(r[5]), json.loads(r[6])),
                             r[7], r[8], r[9], r[10] or "") for r in rows]

    def copy_agent(self, agent_id: int, session_id: int, *, keep_context: bool = True) -> int:
        """A new open agent in ``session_id`` with agent ``agent_id``'s name, settings and messages
        (and its context token ids with ``keep_context``: not for another model); returns its id."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO agents (session_id, name, system_prompt, context_tokens, created_at, options) "
                "SELECT ?, name, system_prompt, CASE WHEN ? THEN context_tokens ELSE x'' END, ?, options "
                "FROM agents WHERE id=?",
                (session_id, keep_context, time.time(), agent_id),
            )
            if cur.rowcount != 1:
                raise SessionStoreError(f"no agent {agent_id} in {self.path}")
            new_id = int(cur.lastrowid)
            db.execute(
                "INSERT INTO messages (agent_id, role, content, status, finish_reason, created_at) "
                "SELECT ?, role, content, status, finish_reason, created_at FROM messages WHERE agent_id=? ORDER BY id",
                (new_id, agent_id),
            )
            self._touch(db, session_id)
        return new_id

    def move_agent(self, agent_id: int, session_id: int, *, keep_context: bool = True) -> int:
        """Agent ``agent_id``, open, into session ``session_id`` (its context token ids dropped without
        ``keep_context``: they were another model's); returns ``agent_id``."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE agents SET session_id=?, closed=0, "
                "context_tokens=CASE WHEN ? THEN context_tokens ELSE x'' END WHERE id=?",
                (session_id, keep_context, agent_id),
            )
            if cur.rowcount != 1:
                raise SessionStoreError(f"no agent {agent_id} in {self.path}")
            self._touch(db, session_id)
        return agent_id

    def delete_agent(self, agent_id: int) -> None:
        """Forget an agent and its messages (a closed one reopened as a copy)."""
        with self._tx() as db:
            db.execute("DELETE FROM agents WHERE id=?", (agent_id,))

    def recent_prompts(self, limit: int = 1000) -> list[str]:
        """The user's last ``limit`` distinct messages over every session, oldest first."""
        rows = self._db.execute(
            "SELECT content FROM messages WHERE role='user' GROUP BY content ORDER BY MAX(id) DESC LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows][::-1]

    # -- turns -----------------------------------------------------------------------

    def begin_turn(self, agent_id: int, user_text: str) -> int:
        """Store the user's message and an empty reply marked ``generating``; returns the reply's id."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages (agent_id, role, content, status, created_at) VALUES (?, 'user', ?, 'complete', ?)",
                (agent_id, user_text, now),
            )
            cur = db.execute(
                "INSERT INTO messages (agent_id, role, content, status, created_at) "
                "VALUES (?, 'assistant', '', 'generating', ?)",
                (agent_id, now),
            )
            self._touch_agent(db, agent_id)
        return int(cur.lastrowid)

    def finish_turn(
        self,
        reply_id: int,
        text: str,
        status: Status,
        *,
        finish_reason: str | None = None,
        context_tokens: list[int] | None = None,
        note: str = "",
    ) -> None:
        """Store the reply (and the figures line shown under it) and, for a kept turn, the
        agent's context token ids, atomically."""
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET content=?, status=?, finish_reason=?, note=? WHERE id=?",
                (text, status, finish_reason, note, reply_id),
            )
            if context_tokens is not None:
                db.execute(
                    "UPDATE agents SET context_tokens=? WHERE id=(SELECT agent_id FROM messages WHERE id=?)",
                    (array("i", context_tokens).tobytes(), reply_id),
                )

    def messages(self, agent_id: int) -> list[Message]:
        rows = self._db.execute(
            "SELECT id, role, content, status, finish_reason, note FROM messages WHERE agent_id=? ORDER BY id",
            (agent_id,),
        )
        return [Message(*r) for r in rows]

    def drop_messages_after(self, agent_id: int, last_kept_id: int | None, context_tokens: list[int]) -> None:
        """Forget the messages after ``last_kept_id`` (all, with None): a conversation rolled back."""
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE agent_id=? AND id>?", (agent_id, last_kept_id or 0))
            db.execute("UPDATE agents SET context_tokens=? WHERE id=?", (array("i", context_tokens).tobytes(), agent_id))

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def _touch_agent(self, db: sqlite3.Connection, agent_id: int) -> None:
        db.execute("UPDATE sessions SET updated_at=? WHERE id=(SELECT session_id FROM agents WHERE id=?)",
                   (time.time(), agent_id))

    def _touch(self, db: sqlite3.Connection, session_id: int) -> None:
        db.execute("UPDATE sessions SET updated_at=? WHERE id=?", (time.time(), session_id))


def _session(row: tuple) -> SessionRecord:
    return SessionRecord(row[0], row[1], row[2], row[3], json.loads(row[4] or "{}"))


def _tokens(blob: bytes) -> list[int]:
    values = array("i")
    values.frombytes(blob or b"")
    return values.tolist()
