"""blockpool-tui responsiveness with 1, 4 and 8 agents generating and in a 200-message chat:
keypress-to-screen latency, and engine throughput with the UI attached vs headless.

The app runs as a person runs it: ``blockpool-tui`` in a pseudo-terminal, in a data
folder of its own (``--data-dir``, a temporary folder; ``--new``, or ``--resume`` of a
prepared 200-message session). A broadcast starts every agent on the same long prompt;
while they generate, single characters are typed into the chat composer and timed from
the write to the pty until the terminal output carries that character (each one unique,
so nothing else can match). Throughput is generated tokens over the wall time of the
engine's steps, read from the app's own telemetry log; headless runs drive the same
engine (same pool, prompts, template, max_tokens) with no UI, before and after each UI
run, and the ratio uses their mean. Every figure is printed with the machine's load.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import base_parser, load, print_table, save
from terminal_driver import SIZE, BenchError, LogTail, Terminal, wait_until
from lab.report import fmt
from frontend.sessions import SessionStore
from telemetry import JsonlWriter, Recorder, read_events
from telemetry.events import EngineStep
from tui.chat import Conversation, plan_turn
from engine.factory import engine_factory
from engine.loading.paths import DEFAULT_MODEL_NAME
from tui.settings import TuiSettings

# (name, agents generating, messages already in the chat shown)
SCENARIOS = (("1 agent", 1, 0), ("4 agents", 4, 0), ("8 agents", 8, 0), ("200-message chat", 1, 200))
# Typed one by one; none of them occurs in the English replies or the chrome of the screen.
MARKERS = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψωЖЗИЙКЛМНПФЦЧШЩЭЮЯ"
NUM_BUSY_KEYS = 40
# Greedy replies to it run past 96 tokens, so all agents generate to the end.
PROMPT = "Write a long story about a dragon who learns to write computer programs."
LATENCY_GOAL_MS = {4: 50.0, 8: 80.0}
RATIO_GOAL = 0.95


def aggregate_tok_s(steps: list[EngineStep]) -> float | None:
    """Generated tokens over the wall time from the first step's start to the last step's end."""
    if not steps:
        return None
    start = min(s.ts - s.ms / 1000 for s in steps)
    end = max(s.ts for s in steps)
    return sum(s.tokens_generated for s in steps) / (end - start) if end > start else None


def headless_tok_s(model_tok: tuple, settings: TuiSettings, prompt: str) -> float | None:
    """``settings.agents`` agents answering ``prompt`` at once; see the module docstring."""
    """The app's engine, built and fed exactly as the app does, stepped with no UI."""
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        # The same telemetry as the app: a recorder writing every event to a JSONL log.
        log = JsonlWriter(Path(tmp) / "telemetry.jsonl").attach(recorder)
        engine = engine_factory(settings.engine_config(), loaded_model=model_tok)(lambda text, fraction: None, recorder)
        render = lambda messages, gen: engine.tokenizer.apply_chat_template(  # noqa: E731
            messages, add_generation_prompt=gen, tokenize=False)
        for i in range(settings.agents):
            plan = plan_turn(Conversation(system=settings.system), prompt, render)
            engine.submit(f"agent-{i + 1}", plan.prompt, None, settings.max_tokens,
                          temperature=settings.temperature)
        while engine.has_work():
            engine.step_once()
        log.close()
    return aggregate_tok_s([e for e in recorder.events("engine_step") if isinstance(e, EngineStep)])


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


def prepare_chat(data_dir: Path, num_messages: int) -> None:
    """A saved session whose one agent holds ``num_messages`` messages (no context: re-read on the next turn)."""
    store = SessionStore(data_dir / "sessions.db")
    session_id = store.new_session(DEFAULT_MODEL_NAME, {})
    agent_id = store.add_agent(session_id, "agent 1", TuiSettings().system)
    for i in range(num_messages // 2):
        reply_id = store.begin_turn(agent_id, f"Question {i}: what is {i} plus {i}?")
        store.finish_turn(reply_id, f"{i} plus {i} is {2 * i}.\nAnything else?", "complete", finish_reason="stop")
    store.close()


def ui_run(settings: TuiSettings, prompt: str, data_dir: Path, history: int) -> dict:
    """Run the app in a pty: broadcast, type while the agents generate, then type idle, then quit."""
    log = data_dir / "telemetry.jsonl"
    if history:
        prepare_chat(data_dir, history)
    argv = [str(Path(sys.executable).with_name("blockpool-tui")), "--agents", str(settings.agents),
            "--max-tokens", str(settings.max_tokens), "--kv-memory", str(settings.kv_memory_bytes),
            "--telemetry-log", str(log), "--data-dir", str(data_dir), "--resume" if history else "--new"]
    env = {**os.environ, "TERM": "xterm-256color", "BLOCKPOOL_CONFIG": "/nonexistent/config.toml",
           "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}
    term = Terminal(argv, env)
    num_agents = settings.agents
    try:
        term.wait_for(b"layers")  # the header gets the pool description once the engine is up
        if f"agent {num_agents}".encode() not in term.output:
            term.wait_for(f"agent {num_agents}".encode(), timeout_s=30)
        time.sleep(1.0)
        term.write(b"\x02")  # ctrl+b: broadcast
        term.wait_for(b"Broadcast one prompt")
        term.write(prompt.encode() + b"\r")
        tail = LogTail(log)
        wait_until(lambda: tail.count("engine_step") > 0, 300,
                   lambda: f"the first engine step; the app drew: {term.tail()}")
        generating = lambda: tail.count("request_finished") < num_agents  # noqa: E731
        busy = type_and_time(term, MARKERS[:NUM_BUSY_KEYS], generating)
        busy_load = os.getloadavg()[0]
        wait_until(lambda: not generating(), 600, lambda: (
            f"the replies to finish ({tail.count('request_finished')} of {num_agents} finished); "
            f"the app drew: {term.tail()}"))
        cpu = thread_cpu_s(term.pid)
        idle = type_and_time(term, MARKERS[NUM_BUSY_KEYS : NUM_BUSY_KEYS + 12], lambda: True)
        term.write(b"\x11")  # ctrl+q
        term.close()
    except BaseException:
        os.kill(term.pid, signal.SIGKILL)
        raise
    steps = [e for e in read_events(log) if isinstance(e, EngineStep)]
    return {"busy_ms": busy, "idle_ms": idle, "tok_s": aggregate_tok_s(steps), "cpu_s": cpu, "load_1min": busy_load}


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


def percentile(samples: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method), or None for fewer than two samples."""
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) >= 2 else None


def run_scenario(model_tok: tuple, name: str, num_agents: int, history: int, max_tokens: int, model: str | None):
    settings = TuiSettings(model=model, max_tokens=max_tokens, agents=num_agents)
    headless = [] if history else [headless_tok_s(model_tok, settings, PROMPT)]
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        ui = ui_run(settings, PROMPT, Path(tmp), history)
    if not history:
        headless.append(headless_tok_s(model_tok, settings, PROMPT))
    measured = [h for h in headless if h is not None]
    ratio = ui["tok_s"] / statistics.mean(measured) if measured and ui["tok_s"] else None
    return {"name": name, "agents": num_agents, "history": history, **ui, "headless_tok_s": headless, "ratio": ratio}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per reply (default 96, quick 48)")
    parser.add_argument("--only", choices=[s[0] for s in SCENARIOS], action="append",
                        help="run only these scenarios (repeatable)")
    args = parser.parse_args()
    max_tokens = args.max_tokens or (48 if args.quick else 96)
    model_tok = load(args.model)
    results = []
    try:
        for name, num_agents, history in SCENARIOS:
            if args.only is None or name in args.only:
                results.append(run_scenario(model_tok, name, num_agents, history, max_tokens, args.model))
    except BenchError as exc:
        raise SystemExit(f"bench_tui: {exc}") from None

    rows = []
    for r in results:
        busy = r["busy_ms"]
        rows.append((r["name"], len(busy), fmt(statistics.median(busy), 1) if busy else "-",
                     fmt(percentile(busy, 95), 1), fmt(percentile(busy, 99), 1),
                     fmt(statistics.median(r["idle_ms"]), 1), fmt(r["tok_s"], 1),
                     " ".join(fmt(h, 1) for h in r["headless_tok_s"]) or "-", fmt(r["ratio"], 3),
                     f"{r['load_1min']:.2f}"))
    print_table(f"keypress -> character on screen (ms) while replies stream; {max_tokens} tokens per reply",
                ("scenario", "keys", "p50", "p95", "p99", "idle p50", "UI tok/s", "headless tok/s",
                 "ratio", "load 1 min"), rows)
    print(f"\n{os.cpu_count()} CPUs; goals: p95 <= 50 ms with 4 agents, <= 80 ms with 8; "
          f"tok/s ratio >= {RATIO_GOAL}")
    headline = {r["name"]: {"p50": statistics.median(r["busy_ms"]) if r["busy_ms"] else None,
                            "p95": percentile(r["busy_ms"], 95), "p99": percentile(r["busy_ms"], 99),
                            "tok_s_ratio": r["ratio"], "load_1min": r["load_1min"]} for r in results}
    save("tui", args.out, params={"model": args.model, "max_tokens": max_tokens, "prompt": PROMPT, "terminal": SIZE,
                                  "scenarios": [r["name"] for r in results]},
         headline={"metric": "keypress-to-screen ms while agents stream", "goals_p95_ms": LATENCY_GOAL_MS,
                   "tok_s_ratio_goal": RATIO_GOAL, **headline},
         data=results)


if __name__ == "__main__":
    main()
