"""The app's record in the session database: which session runs, and its agents and turns.

Bookkeeping only (UI thread, no widgets): maps the app's agent ids to database rows and
writes each change as it happens, so a restart finds every agent and completed turn.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.kv.spill_folders import spill_file_name
from engine.private import free_name, private_dir, write_private_text
from frontend.sessions import (
    AgentRecord,
    AgentSummary,
    CorruptSessionStore,
    Message,
    SessionStore,
    SessionStoreError,
    Status,
)
from frontend.session_export import export_markdown

from tui.settings import TuiSettings

def open_store(settings: TuiSettings) -> tuple[SessionStore, str | None]:
    """The session database under ``settings.data_dir`` (else the user data folder), and a
    warning when a damaged one was moved aside for a new one; raises SessionStoreError."""
    path = settings.data_dir / "sessions.db" if settings.data_dir is not None else None
    try:
        return SessionStore(path), None
    except CorruptSessionStore as exc:
        try:
            moved = exc.move_aside()
        except OSError as move_error:
            raise SessionStoreError(f"{exc}, and it cannot be moved aside: {move_error}") from exc
        warning = f"{exc}. It was moved to {moved} (kept, not deleted); this run starts a new one."
        return SessionStore(exc.path), warning


class SessionLog:
    """One session of ``store``: the last one when resuming, else a new one.

    ``settings.resume``: True resumes the last session, False starts a new one, None
    resumes the last one only when it ran the same model. Write errors go to ``warn``
    instead of stopping the app.
    """

    def __init__(self, store: SessionStore, settings: TuiSettings,
                 warn: Callable[[str], object] = print) -> None:
        self.store = store
        self.model = settings.model_name
        self.warn = warn
        last = store.last_session()
        resume = settings.resume if settings.resume is not None else last is not None and last.model == self.model
        self.resumed = bool(resume and last is not None)
        if self.resumed:
            assert last is not None
            self.session_id = last.id
        else:
            # Never the server's API key: the database is a plain file.
            saved = settings.model_dump(mode="json", exclude={"keymap", "resume", "data_dir", "api_key"})
            self.session_id = store.new_session(self.model, saved)
        self._record_ids: dict[str, int] = {}  # app agent id -> agents.id
        self._reply_ids: dict[str, int] = {}  # app agent id -> messages.id of its unfinished reply

    @property
    def spill_dir(self) -> Path:
        """Where the engine spills this session's caches, so they outlive the process
        (its parent ``spill`` folder is blockpool's own: made private even if it exists)."""
        private_dir(self.store.path.parent / "spill", ours=True)
        return self.store.path.parent / "spill" / str(self.session_id)

    def saved_agents(self) -> list[AgentRecord]:
        """The open agents of a resumed session (none for a new one)."""
        return self.store.agents(self.session_id) if self.resumed else []

    def messages(self, record: AgentRecord) -> list[Message]:
        return self.store.messages(record.id)

    def record(self, agent_id: str) -> AgentRecord | None:
        """The database's view of an agent, for export."""
        record_id = self._record_ids.get(agent_id)
        return next((r for r in self.store.agents(self.session_id) if r.id == record_id), None)

    def export(self, agent_id: str, folder: Path) -> Path:
        """Write an agent's conversation to a new private file ``folder/<name>.md`` (``<name>-2.md``
        when that exists: never over a file); returns its path. Raises OSError or SessionStoreError."""
        record = self.record(agent_id)
        if record is None:
            raise SessionStoreError(f"agent {agent_id!r} has no saved conversation in {self.store.path}")
        path = free_name(folder / f"{record.name.replace('/', '_')}.md")
        return write_private_text(path, export_markdown(self.store, record))

    def reopenable(self, text: str = "") -> list[AgentSummary]:
        """This session's closed agents and every earlier session's, holding ``text`` if given."""
        try:
            return self.store.browse_agents(self.session_id, text)
        except sqlite3.Error as exc:
            self.warn(f"cannot read the session database {self.store.path}: {exc}")
            return []

    def reopen(self, summary: AgentSummary, agent_id: str) -> AgentRecord | None:
        """An agent of the browser, open in this session (its context kept only for the same model).

        An earlier session's agent moves here with its spill file (``agent_id``: its engine id, which
        names that file), so its next turn restores its blocks from disk instead of reading it again.
        A closed agent of this session is copied to a new row (the engine never reuses a closed id)
        and the closed row forgotten, so it is listed once. None: the database could not be written.
        """
        source, same_model = summary.record, summary.model == self.model
        if source.session_id != self.session_id:
            if self._write(self.store.move_agent, source.id, self.session_id, keep_context=same_model) is None:
                return None
            if same_model:
                self._move_spill_file(source.session_id, agent_id)
            record_id = source.id
        else:
            if (record_id := self._write(self.store.copy_agent, source.id, self.session_id)) is None:
                return None
            self._write(self.store.delete_agent, source.id)
        return next((r for r in self.store.agents(self.session_id) if r.id == record_id), None)

    def _move_spill_file(self, from_session: int, agent_id: str) -> None:
        name = spill_file_name(agent_id)
        source = self.store.path.parent / "spill" / str(from_session) / name
        if source.exists():
            try:
                private_dir(self.spill_dir)
                os.replace(source, self.spill_dir / name)
            except OSError as exc:  # its context is read again instead: slower, nothing lost
                self.warn(f"cannot move the spill file {source}: {exc}")

    # -- changes ----------------------------------------------------------------------

    def new_record(self, name: str, system_prompt: str) -> int | None:
        """A new agent row (None when it cannot be written: the agent then goes unsaved)."""
        return self._write(self.store.add_agent, self.session_id, name, system_prompt)

    def agent_opened(self, agent_id: str, name: str, system_prompt: str, record_id: int | None = None) -> None:
        """Bind an app agent to its row: ``record_id`` for a restored one, else a new row."""
        if record_id is None:
            record_id = self.new_record(name, system_prompt)
        if record_id is not None:
            self._record_ids[agent_id] = record_id

    def agent_forked(self, source_agent_id: str, agent_id: str) -> None:
        """Copy the source's transcript and context token ids into the fork's own row (bound
        already by ``agent_opened``), so the fork survives a restart on its own."""
        source = self.record(source_agent_id)
        record_id = self._record_ids.get(agent_id)
        if source is None or record_id is None:
            return
        messages = self.store.messages(source.id)
        for index, (user, reply) in enumerate(zip(messages[::2], messages[1::2])):
            reply_id = self._write(self.store.begin_turn, record_id, user.content)
            last = index == len(messages) // 2 - 1
            if reply_id is not None:
                self._write(self.store.finish_turn, reply_id, reply.content, reply.status,
                            finish_reason=reply.finish_reason, note=reply.note,
                            context_tokens=source.context_tokens if last and source.context_tokens else None)

    def agent_renamed(self, agent_id: str, name: str) -> None:
        if (record_id := self._record_ids.get(agent_id)) is not None:
            self._write(self.store.rename_agent, record_id, name)

    def agent_options_changed(self, agent_id: str, system_prompt: str, options: dict) -> None:
        if (record_id := self._record_ids.get(agent_id)) is not None:
            self._write(self.store.set_agent_options, record_id, system_prompt, options)

    def agent_closed(self, agent_id: str) -> None:
        if (record_id := self._record_ids.pop(agent_id, None)) is not None:
            self._write(self.store.close_agent, record_id)

    def turn_began(self, agent_id: str, user_text: str) -> None:
        if (record_id := self._record_ids.get(agent_id)) is not None:
            reply_id = self._write(self.store.begin_turn, record_id, user_text)
            if reply_id is not None:
                self._reply_ids[agent_id] = reply_id

    def turn_ended(self, agent_id: str, text: str, status: Status, *, finish_reason: str | None = None,
                   token_ids: Sequence[int] | None = None, note: str = "") -> None:
        """Store the reply and its figures line (``note``); ``token_ids`` (the agent's whole
        context) for a turn the engine kept."""
        if (reply_id := self._reply_ids.pop(agent_id, None)) is not None:
            context = list(token_ids) if token_ids is not None else None
            self._write(self.store.finish_turn, reply_id, text, status, finish_reason=finish_reason,
                        context_tokens=context, note=note)

    def turns_dropped(self, agent_id: str, num_kept_turns: int, token_ids: Sequence[int] = ()) -> None:
        """Keep the first ``num_kept_turns`` kept turns (failed ones between them stay) and, as
        the context to adopt on a restart, ``token_ids`` (none: the next start re-reads it)."""
        if (record_id := self._record_ids.get(agent_id)) is None:
            return
        messages, last_kept_id, num_seen = self.store.messages(record_id), None, 0
        for user, reply in zip(messages[::2], messages[1::2]):
            if num_seen == num_kept_turns:
                break
            last_kept_id = reply.id
            num_seen += reply.status in ("complete", "cancelled")
        self._write(self.store.drop_messages_after, record_id, last_kept_id, list(token_ids))

    def _write(self, write: Callable[..., int | None], *args: object, **kwargs: object) -> int | None:
        try:
            return write(*args, **kwargs)
        except SessionStoreError as exc:
            self.warn(str(exc))
            return None


def kept_turns(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """(user text, reply) of the turns the conversation holds: failed and interrupted ones left no reply."""
    pairs = zip(messages[::2], messages[1::2])
    return [(user.content, reply.content) for user, reply in pairs if reply.status in ("complete", "cancelled")]
