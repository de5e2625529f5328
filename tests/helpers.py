"""Helpers the test modules share: waiting on a condition, reading what the app shows, typing.

No test module imports another: what two of them need lives here (or in ``conftest.py``
as a fixture).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.pilot import Pilot

if TYPE_CHECKING:
    from tui.app import BlockpoolApp

WAIT_S = 90.0  # the real model on 2 shared cores: a reply can take this long under load


async def wait_for(pilot: Pilot, condition: Callable[[], object], timeout_s: float = WAIT_S,
                   interval_s: float = 0.02) -> None:
    """Let the app run until ``condition()`` is true; AssertionError naming it after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {condition.__doc__ or condition}")
        await pilot.pause(interval_s)


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.1) -> object:
    """Polls ``predicate()`` (no event loop) until it returns something truthy; returns it, or the last falsy value."""
    deadline = time.monotonic() + timeout_s
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = predicate()
    return value


def capture_notifications(app: BlockpoolApp) -> list[str]:
    """Every message ``app.notify`` shows from now on, in order."""
    seen: list[str] = []
    original = app.notify

    def notify(message: str, **kwargs) -> None:
        seen.append(message)
        original(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return seen


def map_colours(app: BlockpoolApp) -> set[str]:
    """Colours of the cells the block map draws right now."""
    from tui.widgets import BlockMap

    app.refresh_panels()
    grid = app.query_one(BlockMap)
    colours = set()
    for y in range(grid.size.height):
        for segment in grid.render_line(y):
            if segment.style is not None and segment.style.color is not None and segment.text in "█▒":
                colours.add(segment.style.color.name)
    return colours


async def send(pilot: Pilot, text: str) -> None:
    """Type ``text`` into the input on screen (all at once: keypresses are slow here) and press Enter."""
    from textual.widgets import Input

    app: BlockpoolApp = pilot.app  # type: ignore[assignment]
    field = app.screen.query_one(Input) if app.screen.is_modal else app.pane(app.active_agent.agent_id).input
    await wait_for(pilot, lambda: app.focused is field)
    if isinstance(field, Input):
        field.insert_text_at_cursor(text)
    else:  # the chat composer
        field.insert(text)
    await pilot.press("enter")


def make_app(default_model, *, store=None, **settings) -> BlockpoolApp:
    """blockpool-tui over the session's loaded model: 2 agents, 200 blocks, 6-token replies unless told."""
    from tui.app import BlockpoolApp
    from tui.settings import TuiSettings

    values = {"agents": 2, "blocks": 200, "max_tokens": 6, **settings}
    return BlockpoolApp(TuiSettings(**values), loaded_model=default_model, store=store)


def fail_first_call(monkeypatch, cls: type, name: str, error: Exception) -> list[int]:
    """``cls.name`` raises ``error`` the first time it is called, then works; returns a list that
    holds one item once it has failed."""
    real = getattr(cls, name)
    failures: list[int] = []

    def failing_once(self, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, failing_once)
    return failures
