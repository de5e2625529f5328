"""A real terminal for the TUI benchmark: the app in a pseudo-terminal, a reader thread keeping
what it draws, and a cheap tail of its telemetry log."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import termios
import threading
import time
from pathlib import Path

SIZE = (140, 40)  # columns, rows
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\x1b\][^\x07]*\x07")


class BenchError(RuntimeError):
    """The run could not finish; the message says why (and what the app last showed)."""


class Terminal:
    """The app in a pseudo-terminal; a thread keeps reading what it draws."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the app
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
            os.execvpe(argv[0], argv, env)
        self.output = bytearray()
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                chunk = b""
            with self.changed:
                if not chunk:
                    self.output += b"\0EOF"
                    self.changed.notify_all()
                    return
                self.output += chunk
                self.changed.notify_all()

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait_for(self, needle: bytes, *, after: int = 0, timeout_s: float = 300.0) -> float:
        """Block until ``needle`` appears past byte ``after``; returns the perf_counter time it did."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while needle not in self.output[after:]:
                if b"\0EOF" in self.output[after:] or time.monotonic() > deadline:
                    ended = "the app exited" if b"\0EOF" in self.output[after:] else f"{timeout_s:.0f} s passed"
                    raise BenchError(f"the app never drew {needle!r} ({ended}); it last drew: {self.tail()}")
                self.changed.wait(0.01)
            return time.perf_counter()

    def tail(self, num_chars: int = 600) -> str:
        """The end of what the app drew, escape codes removed."""
        with self.changed:
            text = ANSI.sub(b" ", bytes(self.output[-20_000:])).decode(errors="replace")
        return " ".join(text.split())[-num_chars:]

    @property
    def length(self) -> int:
        with self.changed:
            return len(self.output)

    def close(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class LogTail:
    """Counts events of a kind in a growing JSONL log, reading only new lines (cheap: no parsing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.counts: dict[str, int] = {}

    def count(self, kind: str) -> int:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # the last line may be half-written
            self.offset += len(complete)
            for line in complete.splitlines():
                start = line.find(b'"kind":"') + 8
                name = line[start : line.find(b'"', start)].decode()
                self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts.get(kind, 0)


def wait_until(condition, timeout_s: float, what) -> None:
    """``what()`` says what was awaited and how far it got, for the error."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what()}")
        time.sleep(0.1)
