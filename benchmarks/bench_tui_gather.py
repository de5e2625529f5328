"""Gathers in the TUI beside a streaming agent: time of each block gather the app records, against
a memcpy of the same bytes, the first one after start and later ones.

The app runs as a person runs it (``blockpool-tui`` in a pseudo-terminal, its own data folder)
with two agents. Agent 2 streams a long story; meanwhile agent 1 (its max tokens set to 3 in
its settings dialog, F7) sends short turns, so its context stays near one block per layer
(30 blocks for SmolLM2). ``--hot-cache 0`` makes every warm turn gather, as a turn does when
its agent's hot cache was dropped. Then the app quits (contexts spilled) and is started again
``--relaunches`` times: agent 2 streams again and agent 1's first turn restores its context
from disk and gathers it, the first gather after start. Gather times come from the app's own
telemetry log (``Gather`` events). The memcpy (``np.copyto`` between touched buffers) of each
gather's bytes is timed twice: right after the gather, in this process while agent 2 still
streams (the same two cores busy with its decode steps and the app's UI thread), and after the
app exits (a quiet machine). The goal is checked against both. Printed with the machine's load.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import base_parser, print_table, save
from terminal_driver import SIZE, BenchError, Terminal, wait_until
from lab.report import fmt
from telemetry import read_events
from telemetry.events import Gather, RequestFinished, RequestSubmitted

STORY = "Write a long story about a dragon who learns to write computer programs."
F6, SHIFT_F6, F7, ENTER, CTRL_Q = b"\x1b[17~", b"\x1b[17;2~", b"\x1b[18~", b"\r", b"\x11"
TAB, END, BACKSPACE = b"\t", b"\x1b[F", b"\x7f"
SHORT_REPLY_TOKENS = 3
BESIDE_RUNS = 10  # memcpys timed right after each gather, while agent 2 still streams
GOAL = "p95 <= 2x memcpy p95 + 1 ms"


@dataclass(frozen=True)
class Sample:
    phase: str  # "first after start" | "later"
    num_blocks: int
    num_bytes: int
    ms: float
    load_1min: float
    memcpy_beside_ms: tuple[float, ...]  # the same bytes copied in this process while agent 2 streamed


def events(log: Path, kind: type) -> list:
    if not log.exists():
        return []
    return [e for e in read_events(log, skip_invalid=True) if isinstance(e, kind)]


class App:
    """One run of the app; agent ids are learnt from the order their first turns arrive."""

    def __init__(self, data_dir: Path, log: Path, max_tokens: int, *, resume: bool) -> None:
        argv = [str(Path(sys.executable).with_name("blockpool-tui")), "--agents", "2", "--max-tokens",
                str(max_tokens), "--hot-cache", "0", "--telemetry-log", str(log), "--data-dir", str(data_dir),
                "--resume" if resume else "--new"]
        env = {**os.environ, "TERM": "xterm-256color", "BLOCKPOOL_CONFIG": "/nonexistent/config.toml",
               "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}
        self.log, self.term = log, Terminal(argv, env)
        self.term.wait_for(b"layers")
        self.term.wait_for(b"agent 2", timeout_s=30)
        time.sleep(1.0)

    def send(self, text: str) -> None:
        self.term.write(text.encode())
        time.sleep(0.2)
        self.term.write(ENTER)

    def submitted(self, after: float) -> list[RequestSubmitted]:
        return [e for e in events(self.log, RequestSubmitted) if e.ts > after]

    def finished(self, agent_id: str, after: float) -> bool:
        return any(e.agent_id == agent_id and e.ts > after for e in events(self.log, RequestFinished))

    def gathers(self, agent_id: str, after: float) -> list[Gather]:
        return [e for e in events(self.log, Gather) if e.agent_id == agent_id and e.ts > after and not e.hot]

    def set_max_tokens(self, max_tokens: int) -> None:
        """The focused agent's max tokens, through its settings dialog (the fourth field)."""
        self.term.write(F7)
        self.term.wait_for(b"Max tokens per reply", timeout_s=30)
        time.sleep(0.5)
        for key in (TAB, TAB, TAB, END, BACKSPACE * 8, str(max_tokens).encode()):
            self.term.write(key)
            time.sleep(0.2)
        self.term.write(ENTER)
        time.sleep(0.5)

    def quit(self) -> None:
        self.term.write(CTRL_Q)
        self.term.close()


def start_streamer(app: App, since: float) -> str:
    """Agent 2 starts the story; returns its agent id once it streams."""
    app.term.write(F6)
    time.sleep(0.5)
    app.send(STORY if not app.submitted(0.0) else "Go on with the story.")
    wait_until(lambda: app.submitted(since), 120, lambda: "agent 2's turn to be submitted")
    streamer = app.submitted(since)[-1].agent_id
    time.sleep(2.0)  # its prompt read (or its context restored) and tokens streaming
    app.term.write(SHIFT_F6)
    time.sleep(0.5)
    return streamer


def short_turn(app: App, text: str, streamer: str, *, want_gather: bool) -> tuple[Gather, list[float]] | None:
    """Agent 1 sends ``text`` and its short reply ends; returns the gather of its context and
    memcpys of its bytes timed while agent 2 streams (before agent 1's reply ends)."""
    since = time.time()
    app.send(text)
    wait_until(lambda: [e for e in app.submitted(since) if e.agent_id != streamer], 60,
               lambda: "agent 1's turn to be submitted")
    agent = [e for e in app.submitted(since) if e.agent_id != streamer][0].agent_id
    found = None
    if want_gather:
        wait_until(lambda: app.gathers(agent, since), 60, lambda: f"a gather of {agent}'s context")
        gather = app.gathers(agent, since)[0]
        found = gather, memcpy_ms(gather.num_bytes, runs=BESIDE_RUNS, pause_s=0.02)
    wait_until(lambda: app.finished(agent, since), 120, lambda: f"{agent}'s reply to end")
    time.sleep(0.3)
    return found


def memcpy_ms(num_bytes: int, runs: int = 60, pause_s: float = 0.0) -> list[float]:
    """Copies of ``num_bytes`` between touched buffers (the first copy, which touches them, not counted)."""
    src = np.ones(num_bytes // 4, dtype=np.float32)
    dst = np.zeros_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        np.copyto(dst, src)
        times.append((time.perf_counter() - tic) * 1000)
        time.sleep(pause_s)  # spread over several of the streamer's decode steps
    return times


def p95(samples: list[float]) -> float | None:
    return statistics.quantiles(samples, n=100, method="inclusive")[94] if len(samples) >= 2 else (
        samples[0] if samples else None)


def run(data_dir: Path, rounds: int, relaunches: int, max_tokens: int) -> list[Sample]:
    log = data_dir / "telemetry.jsonl"
    samples: list[Sample] = []
    app = App(data_dir, log, max_tokens, resume=False)
    try:
        app.set_max_tokens(SHORT_REPLY_TOKENS)  # agent 1, focused at start
        streamer = start_streamer(app, 0.0)
        short_turn(app, "Hi! Answer in one short line.", streamer, want_gather=False)  # cold: nothing to gather
        for i in range(rounds):
            if app.finished(streamer, 0.0):
                break  # only gathers beside a streaming agent count
            found = short_turn(app, f"And {i}?", streamer, want_gather=True)
            assert found is not None
            gather, beside = found
            samples.append(Sample("later", gather.num_blocks, gather.num_bytes, gather.ms, os.getloadavg()[0],
                                  tuple(beside)))
        app.quit()
        for _ in range(relaunches):
            app = App(data_dir, log, max_tokens, resume=True)
            streamer = start_streamer(app, time.time())
            found = short_turn(app, "And now?", streamer, want_gather=True)
            assert found is not None
            gather, beside = found
            samples.append(Sample("first after start", gather.num_blocks, gather.num_bytes, gather.ms,
                                  os.getloadavg()[0], tuple(beside)))
            app.quit()
    except BaseException:
        os.kill(app.term.pid, signal.SIGKILL)
        raise
    return samples


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="agent 1's warm turns in the first run")
    parser.add_argument("--relaunches", type=int, default=3, help="app restarts, each timing the first gather")
    parser.add_argument("--max-tokens", type=int, default=600, help="tokens per reply (the story's length)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tui-gather-") as tmp:
        try:
            samples = run(Path(tmp), args.rounds, args.relaunches, args.max_tokens)
        except BenchError as exc:
            raise SystemExit(f"bench_tui_gather: {exc}") from None
    rows, summary = [], {}
    for phase in ("first after start", "later"):
        for num_blocks in sorted({s.num_blocks for s in samples if s.phase == phase}):
            group = [s for s in samples if s.phase == phase and s.num_blocks == num_blocks]
            num_bytes = max(s.num_bytes for s in group)
            quiet = memcpy_ms(num_bytes)
            beside = [ms for s in group for ms in s.memcpy_beside_ms]
            gather_p95, quiet_p95, beside_p95 = p95([s.ms for s in group]), p95(quiet), p95(beside)
            met = {name: gather_p95 is not None and copy is not None and gather_p95 <= 2 * copy + 1
                   for name, copy in (("quiet", quiet_p95), ("beside", beside_p95))}
            load = f"{min(s.load_1min for s in group):.2f}-{max(s.load_1min for s in group):.2f}"
            rows.append((phase, num_blocks, f"{num_bytes / 2**20:.1f}", len(group),
                         fmt(statistics.median(s.ms for s in group), 2), fmt(gather_p95, 2),
                         fmt(statistics.median(beside), 2), fmt(beside_p95, 2), "yes" if met["beside"] else "no",
                         fmt(statistics.median(quiet), 2), fmt(quiet_p95, 2), "yes" if met["quiet"] else "no", load))
            summary[f"{phase}, {num_blocks} blocks"] = {
                "gather_p95_ms": gather_p95, "memcpy_beside_p95_ms": beside_p95, "memcpy_quiet_p95_ms": quiet_p95,
                "n": len(group), "goal_met_beside": met["beside"], "goal_met_quiet": met["quiet"]}
    print_table("block gathers recorded by blockpool-tui while another agent streams (--hot-cache 0)",
                ("phase", "blocks", "MiB", "n", "gather p50", "gather p95", "memcpy beside p50", "memcpy beside p95",
                 "goal, beside", "memcpy quiet p50", "memcpy quiet p95", "goal, quiet", "load 1 min"), rows)
    print(f"\n{os.cpu_count()} CPUs; goal: gather {GOAL}. memcpy beside: timed in this process right after "
          "each gather while agent 2 streamed; quiet: after the app exited")
    save("tui_gather", args.out, params={"rounds": args.rounds, "relaunches": args.relaunches,
                                         "max_tokens": args.max_tokens, "story": STORY, "terminal": SIZE},
         headline={"metric": "TUI gather ms vs memcpy of the same bytes", "goal": GOAL, **summary},
         data=[s.__dict__ for s in samples])


if __name__ == "__main__":
    main()
