"""blockpool-tui responsiveness with 4 agents generating: keypress-to-screen latency, and
engine throughput with the UI attached vs headless.

The app runs as a person runs it: ``blockpool-tui`` in a pseudo-terminal. A broadcast
starts every agent on the same long prompt; while they generate, single characters are
typed into a chat input and timed from the write to the pty until the terminal output
carries that character (each one unique, so nothing else can match). Throughput is
generated tokens over the wall time of the engine's steps, read from the app's own
telemetry log; the headless runs drive the same engine (same pool, prompts, template,
max_tokens) with no UI, before and after, and the ratio uses their mean.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import fcntl
import os
import pty
import random
import signal
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from common import base_parser, load, print_table, save
from engine.experiments.report import fmt
from telemetry import JsonlWriter, Recorder, read_events
from telemetry.events import EngineStep
from tui.chat import Conversation, plan_turn
from tui.engine_factory import engine_factory
from tui.settings import TuiSettings

AGENTS = 4
SIZE = (140, 40)  # columns, rows
# Typed one by one; none of them occurs in the English replies or the chrome of the screen.
MARKERS = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψωЖЗИЙКЛМНПФЦЧШЩЭЮЯ"
# Greedy replies to it run past 96 tokens, so all four agents generate to the end.
PROMPT = "Write a long story about a dragon who learns to write computer programs."
LATENCY_GOAL_MS = 50.0
RATIO_GOAL = 0.9


def aggregate_tok_s(steps: list[EngineStep]) -> float | None:
    """Generated tokens over the wall time from the first step's start to the last step's end."""
    if not steps:
        return None
    start = min(s.ts - s.ms / 1000 for s in steps)
    end = max(s.ts for s in steps)
    return sum(s.tokens_generated for s in steps) / (end - start) if end > start else None


def headless_tok_s(model_tok: tuple, settings: TuiSettings, prompt: str) -> float | None:
    """The app's engine, built and fed exactly as the app does, stepped with no UI."""
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        # The same telemetry as the app: a recorder writing every event to a JSONL log.
        log = JsonlWriter(Path(tmp) / "telemetry.jsonl").attach(recorder)
        engine = engine_factory(settings, loaded_model=model_tok)(lambda text, fraction: None, recorder)
        render = lambda messages, gen: engine.tokenizer.apply_chat_template(  # noqa: E731
            messages, add_generation_prompt=gen, tokenize=False)
        for i in range(AGENTS):
            plan = plan_turn(Conversation(system=settings.system), prompt, render)
            engine.submit(f"agent-{i + 1}", plan.prompt, None, settings.max_tokens,
                          temperature=settings.temperature)
        while engine.has_work():
            engine.step_once()
        log.close()
    return aggregate_tok_s([e for e in recorder.events("engine_step") if isinstance(e, EngineStep)])


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
                    raise RuntimeError(f"the app never drew {needle!r}; last output: {bytes(self.output[-400:])!r}")
                self.changed.wait(0.01)
            return time.perf_counter()

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


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def type_and_time(term: Terminal, markers: str, keep_going) -> list[float]:
    """Latency (ms) of each marker typed while ``keep_going()``; one at a time, with pauses."""
    latencies = []
    for char in markers:
        if not keep_going():
            break
        start = term.length
        sent = time.perf_counter()
        term.write(char.encode())
        latencies.append((term.wait_for(char.encode(), after=start, timeout_s=30) - sent) * 1000)
        time.sleep(random.uniform(0.05, 0.15))
    return latencies


def ui_run(settings: TuiSettings, prompt: str, log: Path) -> dict:
    """Run the app in a pty: broadcast, type while 4 agents generate, then type idle, then quit."""
    argv = [str(Path(sys.executable).with_name("blockpool-tui")), "--agents", str(AGENTS),
            "--max-tokens", str(settings.max_tokens), "--kv-memory", str(settings.kv_memory_bytes),
            "--telemetry-log", str(log)]
    env = {**os.environ, "TERM": "xterm-256color", "BLOCKPOOL_CONFIG": "/nonexistent/config.toml",
           "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}
    term = Terminal(argv, env)
    try:
        term.wait_for(b"layers")  # the header gets the pool description once the engine is up
        time.sleep(1.0)
        term.write(b"\x02")  # ctrl+b: broadcast
        term.wait_for(b"Broadcast one prompt")
        term.write(prompt.encode() + b"\r")
        tail = LogTail(log)
        wait_until(lambda: tail.count("engine_step") > 0, 300, "the first engine step")
        generating = lambda: tail.count("request_finished") < AGENTS  # noqa: E731
        busy = type_and_time(term, MARKERS[:40], generating)
        wait_until(lambda: not generating(), 600, "the replies to finish")
        cpu = thread_cpu_s(term.pid)
        idle = type_and_time(term, MARKERS[40:], lambda: True)
        term.write(b"\x11")  # ctrl+q
        term.close()
    except BaseException:
        os.kill(term.pid, signal.SIGKILL)
        raise
    steps = [e for e in read_events(log) if isinstance(e, EngineStep)]
    return {"busy_ms": busy, "idle_ms": idle, "tok_s": aggregate_tok_s(steps), "cpu_s": cpu}


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far of the app's main (UI) thread and of all its other threads together."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = {"ui_thread": 0.0, "other_threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        cpu["ui_thread" if int(task.name) == pid else "other_threads"] += seconds
    return cpu


def p95(samples: list[float]) -> float | None:
    return statistics.quantiles(samples, n=20, method="inclusive")[-1] if len(samples) >= 2 else None


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per reply (default 96, quick 48)")
    parser.add_argument("--rounds", type=int, default=1, help="UI runs, each between two headless runs")
    args = parser.parse_args()
    max_tokens = args.max_tokens or (48 if args.quick else 96)
    settings = TuiSettings(model=args.model, max_tokens=max_tokens, agents=AGENTS)
    prompt = PROMPT
    model_tok = load(args.model)

    # Headless, UI, headless, UI, ... headless: the machine's other load drifts, so bracket each UI run.
    headless_runs = [headless_tok_s(model_tok, settings, prompt)]
    ui_runs = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            ui_runs.append(ui_run(settings, prompt, Path(tmp) / "telemetry.jsonl"))
        headless_runs.append(headless_tok_s(model_tok, settings, prompt))
    headless = statistics.mean(x for x in headless_runs if x is not None)
    ui_tok_s = statistics.mean(run["tok_s"] for run in ui_runs if run["tok_s"] is not None)
    ratio = ui_tok_s / headless if headless else None
    # Each UI run against the two headless runs around it: less exposed to slow drifts in load.
    paired = [run["tok_s"] / statistics.mean(headless_runs[i : i + 2]) for i, run in enumerate(ui_runs)
              if run["tok_s"] is not None and None not in headless_runs[i : i + 2]]
    ui = {key: [x for run in ui_runs for x in run[key]] for key in ("busy_ms", "idle_ms")}
    cpu = {name: sum(run["cpu_s"][name] for run in ui_runs) for name in ui_runs[0]["cpu_s"]}
    busy_p95, idle_p95 = p95(ui["busy_ms"]), p95(ui["idle_ms"])

    print_table("keypress -> character on screen (ms)", ("agents generating", "samples", "p50", "p95", "max"), [
        (AGENTS, len(ui["busy_ms"]), fmt(statistics.median(ui["busy_ms"]), 1), fmt(busy_p95, 1),
         fmt(max(ui["busy_ms"]), 1)),
        (0, len(ui["idle_ms"]), fmt(statistics.median(ui["idle_ms"]), 1), fmt(idle_p95, 1),
         fmt(max(ui["idle_ms"]), 1)),
    ])
    runs = [("headless", h) for h in headless_runs]
    for i, run in enumerate(ui_runs):
        runs.insert(2 * i + 1, ("UI attached", run["tok_s"]))
    print_table(f"aggregate tok/s, {AGENTS} agents x {max_tokens} tokens, in run order", ("run", "tok/s"),
                [(name, fmt(value, 1)) for name, value in runs] + [
                    ("ratio UI / headless (means)", fmt(ratio, 3)),
                    ("ratio per UI run (vs its brackets)", " ".join(fmt(r, 3) for r in paired))])
    print_table("CPU seconds of the app process up to the last reply", ("thread", "cpu s", "share"), [
        (name, fmt(value, 1), fmt(value / sum(cpu.values()), 3)) for name, value in cpu.items()
    ])
    load1, _, _ = os.getloadavg()
    print(f"\nload average (1 min) at the end: {load1:.1f} on {os.cpu_count()} CPUs")
    print(f"\nkeypress p95 {fmt(busy_p95, 1)} ms (goal <= {LATENCY_GOAL_MS:.0f}); "
          f"tok/s ratio {fmt(ratio, 3)} (goal >= {RATIO_GOAL})")
    save("tui", args.out, params={"model": args.model, "agents": AGENTS, "max_tokens": max_tokens,
                                  "rounds": args.rounds, "prompt": prompt, "terminal": SIZE},
         headline={"metric": "keypress-to-screen p95 ms with 4 agents generating", "value": busy_p95,
                   "goal": f"<= {LATENCY_GOAL_MS:.0f}", "tok_s_ratio_ui_vs_headless": ratio,
                   "tok_s_ratio_per_ui_run": paired,
                   "tok_s_ratio_goal": f">= {RATIO_GOAL}"},
         data={"keypress_ms_generating": ui["busy_ms"], "keypress_ms_idle": ui["idle_ms"],
               "tok_s_ui": [run["tok_s"] for run in ui_runs], "tok_s_headless": headless_runs, "app_cpu_s": cpu,
               "load_average_1min": load1})


if __name__ == "__main__":
    main()
