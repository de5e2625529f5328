"""A 30,000-character message into blockpool-tui's composer: as one bracketed paste, and typed
as one key per character (a terminal without bracketed paste), timed from the first event
to the whole text in the composer. The app runs headless (Textual's Pilot) over the real model.

Inserting per key with a re-measure of the whole text once took over a minute; the goals
are a paste under 2 s and the typed burst under 15 s.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import asyncio
import os
import tempfile
import time

from textual import events
from textual.keys import _character_to_key

from common import base_parser, load, print_table, save
from lab.report import fmt
from tui.app import BlockpoolApp
from tui.settings import TuiSettings

TEXT = ("lighthouse keeper? " * 1600)[:30_000]
PASTE_GOAL_S = 2.0
TYPED_GOAL_S = 15.0


async def until(pilot, condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:.0f} s")
        await pilot.pause(0.02)


async def measure(model_tok, text: str) -> tuple[float, float]:
    app = BlockpoolApp(TuiSettings(agents=1, blocks=30, max_tokens=6), loaded_model=model_tok)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.ready)
        composer = app.pane(app.active_agent.agent_id).input
        started = time.perf_counter()
        app.post_message(events.Paste(text))
        await until(pilot, lambda: composer.text == text)
        paste_s = time.perf_counter() - started
        composer.value = ""
        started = time.perf_counter()
        for char in text:
            app.post_message(events.Key(_character_to_key(char), char))
        await until(pilot, lambda: composer.text == text)
        return paste_s, time.perf_counter() - started


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    model_tok = load(args.model)
    with tempfile.TemporaryDirectory(prefix="blockpool-bench-paste-") as home:
        os.environ["BLOCKPOOL_CONFIG"] = f"{home}/absent.toml"
        runs = [asyncio.run(measure(model_tok, TEXT)) for _ in range(repeats)]
    paste = max(p for p, _ in runs)
    typed = max(t for _, t in runs)
    print_table(f"{len(TEXT):,} characters into the composer, slowest of {repeats}", ("how", "s", "goal s"),
                [("bracketed paste", fmt(paste, 2), fmt(PASTE_GOAL_S, 1)),
                 ("one key per character", fmt(typed, 2), fmt(TYPED_GOAL_S, 1))])
    save("bench_paste", args.out, params={"characters": len(TEXT), "repeats": repeats},
         headline={"paste_s": paste, "typed_s": typed, "goals_met": paste < PASTE_GOAL_S and typed < TYPED_GOAL_S},
         data=[{"paste_s": p, "typed_s": t} for p, t in runs])


if __name__ == "__main__":
    main()
