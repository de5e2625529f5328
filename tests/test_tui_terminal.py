"""blockpool-tui end to end in a real terminal, as a person uses it, on the real model.

The app runs under tmux (or, without tmux, in a bare pseudo-terminal) with its own data
folder. Keys are sent in bursts, as a fast typist or a paste without brackets sends
them; what was sent and kept is read back from the session database, and what is shown
from the screen.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from frontend.sessions import Message

try:
    import pty
except ImportError:  # not a POSIX system
    pty = None

APP = Path(sys.executable).with_name("blockpool-tui")
SIZE = (170, 48)
QUESTION = "What is 2+2? Answer briefly?"
STORY = "Write a long story about a dragon who learns to sail."
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\x1b\][^\x07]*\x07")
PTY_KEYS = {"Enter": b"\r", "Escape": b"\x1b", "F6": b"\x1b[17~", "C-q": b"\x11"}


class Tmux:
    """The app in a detached tmux session on a private server."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.socket = f"blockpool-test-{os.getpid()}"
        command = " ".join(_quote(a) for a in argv) + "; echo __exited $?; sleep 60"
        exports = [f"{k}={_quote(v)}" for k, v in env.items()]
        self._tmux("new-session", "-d", "-s", "t", "-x", str(SIZE[0]), "-y", str(SIZE[1]),
                   f"env {' '.join(exports)} {command}")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def type(self, text: str, then: str | None = None) -> None:
        """One send-keys: the whole text (and the key after it) in one burst."""
        self._tmux("send-keys", "-t", "t", "-l", text)
        if then:
            self._tmux("send-keys", "-t", "t", then)

    def key(self, name: str) -> None:
        self._tmux("send-keys", "-t", "t", name)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


class Pty:
    """The app in a bare pseudo-terminal: the screen is the output stream with the escape codes removed."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            import fcntl
            import struct
            import termios

            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
            os.execvpe(argv[0], argv, {**os.environ, **env})
        os.set_blocking(self.fd, False)
        self.output = b""

    def type(self, text: str, then: str | None = None) -> None:
        os.write(self.fd, text.encode() + (PTY_KEYS[then] if then else b""))

    def key(self, name: str) -> None:
        os.write(self.fd, PTY_KEYS[name])

    def screen(self) -> str:
        try:
            while chunk := os.read(self.fd, 1 << 16):
                self.output += chunk
        except (BlockingIOError, OSError):
            pass
        if b"__exited" not in self.output and os.waitpid(self.pid, os.WNOHANG)[0]:
            self.output += b"__exited"
        return ANSI.sub(b"", self.output).decode(errors="replace")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def wait_until(condition: Callable[[], object], what: str, term, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; screen:\n{term.screen()}")
        time.sleep(0.2)


def conversations(data_dir: Path) -> dict[str, list[Message]]:
    """Agent name -> its saved messages, in the last session (read-only: opening a SessionStore
    would mark the running app's unfinished reply as interrupted)."""
    path = data_dir / "sessions.db"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        session = db.execute("SELECT max(id) FROM sessions").fetchone()[0]
        agents = db.execute("SELECT id, name FROM agents WHERE session_id=? AND closed=0 ORDER BY id", (session,))
        return {name: [Message(*row) for row in db.execute(
            "SELECT id, role, content, status, finish_reason FROM messages WHERE agent_id=? ORDER BY id", (agent_id,))]
            for agent_id, name in agents.fetchall()}
    finally:
        db.close()


def launch(data_dir: Path, *options: str):
    argv = [str(APP), "--data-dir", str(data_dir), "--agents", "2", "--max-tokens", "160", "--blocks", "400",
            *options]
    env = {"BLOCKPOOL_CONFIG": str(data_dir / "absent.toml"), "TERM": "xterm-256color",
           "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}  # Textual trusts these over the terminal
    if shutil.which("tmux"):
        term = Tmux(argv, env)
    elif pty is not None:
        term = Pty(argv, env)
    else:
        pytest.skip("neither tmux nor a POSIX pseudo-terminal is available to drive a real terminal")
    wait_until(lambda: "layers ·" in term.screen(), "the engine to start", term)
    return term


def test_type_switch_cancel_quit_and_relaunch_in_a_real_terminal(tmp_path, default_model):
    del default_model  # only loaded (and converted) once per test session, before the app needs it
    data = tmp_path / "data"
    term = launch(data, "--new")
    try:
        term.type(QUESTION, then="Enter")  # one burst, "?" inside and at the end
        wait_until(lambda: [m.status for m in conversations(data).get("agent 1", [])] == ["complete", "complete"],
                   "agent 1's reply", term)
        first = conversations(data)["agent 1"]
        assert first[0].content == QUESTION and first[1].content.strip()

        term.key("F6")
        term.type(STORY, then="Enter")
        wait_until(lambda: "generating" in term.screen(), "agent 2 to generate", term)
        term.key("Escape")
        wait_until(lambda: len(conversations(data).get("agent 2", [])) == 2
                   and conversations(data)["agent 2"][1].status != "generating", "the cancelled reply", term)
        second = conversations(data)["agent 2"]
        assert second[0].content == STORY
        assert (second[1].status, second[1].finish_reason) == ("cancelled", "cancelled")
        term.key("C-q")
        wait_until(lambda: "__exited" in term.screen(), "the app to quit", term, timeout_s=30)
    finally:
        term.close()

    term = launch(data)  # resumes the session
    try:
        wait_until(lambda: QUESTION in term.screen(), "agent 1's conversation on screen", term, timeout_s=30)
        term.key("F6")
        wait_until(lambda: STORY in term.screen() and "cancelled" in term.screen(),
                   "agent 2's cancelled conversation on screen", term, timeout_s=30)
        assert [m.content for m in conversations(data)["agent 1"]] == [m.content for m in first]
        term.key("C-q")
        wait_until(lambda: "__exited" in term.screen(), "the app to quit", term, timeout_s=30)
    finally:
        term.close()
