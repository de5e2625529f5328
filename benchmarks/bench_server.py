"""blockpool serve vs mlx_lm.server: 8 clients x 4 turns with growing history, same model, same run.

Each client keeps its own conversation (a distinct ~800-token system prompt of notes, then
short questions) and streams every turn through the official openai client. Reported per
server: time to first token of turns 2-4 (history in blocks for ours; mlx_lm.server has its
own LRU prompt cache) and aggregate generated tok/s over the whole workload. The servers run
one after the other as subprocesses on 127.0.0.1, on the same converted model folder.
Goal (issue 12): TTFT of turns 2+ >= 1.5x faster, aggregate tok/s >= 1.0x.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from common import base_parser, print_table, ratio, save
from lab.report import fmt
from engine.loading.loader import embedded_model_dir

TTFT_GOAL = 1.5
TOKS_GOAL = 1.0
COLOURS = ("red", "brown", "grey", "white", "black", "golden", "silver")
ANIMALS = ("fox", "owl", "horse", "otter", "crow", "whale", "lynx")
QUESTIONS = ("Which animal walked the farthest?", "And which one met the most friends?",
             "Name one colour from the notes.", "Summarize note 2 in five words.", "Which river was it?")


def notes(client: int, num_notes: int) -> str:
    lines = [f"Note {i}: the {COLOURS[(i + client) % 7]} {ANIMALS[(i * 3 + client) % 7]} walked "
             f"{(i * 7 + client) % 13 + 1} miles to the river and met {(i + client) % 5 + 2} friends."
             for i in range(num_notes)]
    return f"You are assistant {client}. Answer from these notes in one sentence.\n" + "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def server(command: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[:6]} exited {process.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[:6]} did not answer /health in 300 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def conversation(client: openai.AsyncOpenAI, model: str, index: int, turns: int, num_notes: int,
                       max_tokens: int) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": notes(index, num_notes)}]
    out = []
    for turn in range(turns):
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        started = time.perf_counter()
        first: float | None = None
        text, tokens, cached = "", 0, None
        stream = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
                details = chunk.usage.prompt_tokens_details
                cached = details.cached_tokens if details is not None else None
        end = time.perf_counter()
        out.append({"client": index, "turn": turn + 1, "ttft_s": (first or end) - started, "total_s": end - started,
                    "tokens": tokens, "cached_tokens": cached, "text": text})
        messages.append({"role": "assistant", "content": text})
    return out


def server_ttft(url: str) -> tuple[float, float] | None:
    """(sum, count) of blockpool serve's own TTFT histogram (arrival to first token, on the engine
    thread); None for a server without it. The gap to the client's TTFT is HTTP, tokenizing and SSE."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("blockpool:time_to_first_token_seconds_")}
    if "blockpool:time_to_first_token_seconds_count" not in values:
        return None
    return values["blockpool:time_to_first_token_seconds_sum"], values["blockpool:time_to_first_token_seconds_count"]


async def workload(url: str, model: str, args: Any) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    # One untimed request first: the first forward pass of a fresh process pays one-time costs.
    await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    load_before = load_average()
    engine_before = server_ttft(url)
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(conversation(client, model, i, args.turns, args.notes, args.max_tokens)
                                      for i in range(args.clients)), return_exceptions=True)
    wall_s = time.perf_counter() - started
    errors = [f"{type(e).__name__}: {e}" for e in outcomes if isinstance(e, BaseException)]
    if len(errors) == len(outcomes):
        raise RuntimeError(f"every client failed; first: {errors[0]}")
    turns = [t for c in outcomes if not isinstance(c, BaseException) for t in c]
    engine_after = server_ttft(url)
    engine_ttft = None
    if engine_before is not None and engine_after is not None and engine_after[1] > engine_before[1]:
        engine_ttft = (engine_after[0] - engine_before[0]) / (engine_after[1] - engine_before[1])
    later = [t["ttft_s"] for t in turns if t["turn"] >= 2]
    first = [t["ttft_s"] for t in turns if t["turn"] == 1]
    return {
        "wall_s": wall_s,
        "tokens": sum(t["tokens"] for t in turns),
        "tok_s": sum(t["tokens"] for t in turns) / wall_s,
        "ttft_turn1_p50_s": statistics.median(first),
        "ttft_later_p50_s": statistics.median(later),
        "ttft_later_mean_s": statistics.fmean(later),
        "ttft_later_p95_s": sorted(later)[int(0.95 * (len(later) - 1))],
        "ttft_all_mean_s": statistics.fmean(t["ttft_s"] for t in turns),
        "engine_ttft_all_mean_s": engine_ttft,
        "errors": errors,
        "load_before": load_before,
        "load_after": load_average(),
        "turns": turns,
    }


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--notes", type=int, default=30, help="notes in each client's system prompt (~27 tokens each)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--kv-memory", default="1GiB", help="blockpool serve's pool (16 clients x 800 tokens "
                                                             "need more than the default 512MiB)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.turns, args.notes = 4, 3, 15
    model_dir = str(embedded_model_dir())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "BLOCKPOOL_CONFIG": str(Path(tempfile.gettempdir()) / "blockpool-bench-no-config.toml")}
    fast = [sys.executable, "-m", "engine.fastblas"]  # OpenBLAS for both servers
    results: dict[str, Any] = {}
    port = free_port()
    ours = [sys.executable, "-m", "blockpool", "serve", "--model", model_dir, "--served-model-name", "bench",
            "--port", str(port), "--max-batch", str(args.clients), "--kv-memory", args.kv_memory]
    print(f"blockpool serve on {model_dir} (load {load_average()})", flush=True)
    with server(ours, port, env) as url:
        results["blockpool"] = asyncio.run(workload(url, "bench", args))
    port = free_port()
    theirs = [*fast, sys.executable, "-m", "mlx_lm", "server", "--model", model_dir, "--port", str(port),
              "--host", "127.0.0.1", "--decode-concurrency", str(args.clients),
              "--prompt-concurrency", str(args.clients), "--log-level", "WARNING"]
    print(f"mlx_lm.server on {model_dir} (load {load_average()})", flush=True)
    with server(theirs, port, env) as url:
        results["mlx_lm"] = asyncio.run(workload(url, "default_model", args))
    return report(results, args, model_dir)


def report(results: dict[str, Any], args: Any, model_dir: str) -> int:
    ours, theirs = results["blockpool"], results["mlx_lm"]
    ttft_ratio = ratio(theirs["ttft_later_mean_s"], ours["ttft_later_mean_s"])
    toks_ratio = ratio(ours["tok_s"], theirs["tok_s"])
    theirs_by_turn = {(t["client"], t["turn"]): t["text"] for t in theirs["turns"]}
    same = sum(theirs_by_turn.get((t["client"], t["turn"])) == t["text"] for t in ours["turns"])
    rows = [(name, fmt(r["ttft_turn1_p50_s"] * 1000), fmt(r["ttft_later_p50_s"] * 1000),
             fmt(r["ttft_later_mean_s"] * 1000), fmt(r["ttft_later_p95_s"] * 1000), fmt(r["tok_s"]),
             fmt(r["wall_s"]), len(r["errors"]), r["load_before"], r["load_after"]) for name, r in results.items()]
    print_table(f"{args.clients} clients x {args.turns} turns, {args.max_tokens} tokens a turn",
                ("server", "TTFT t1 p50 ms", "TTFT t2+ p50 ms", "t2+ mean ms", "t2+ p95 ms", "tok/s", "wall s",
                 "failed clients", "load before", "load after"), rows)
    print(f"\nTTFT turns 2+: mlx_lm / ours = {fmt(ttft_ratio)}x (goal >= {TTFT_GOAL}x); "
          f"tok/s: ours / mlx_lm = {fmt(toks_ratio)}x (goal >= {TOKS_GOAL}x); "
          f"identical replies {same}/{len(ours['turns'])}")
    if ours["engine_ttft_all_mean_s"] is not None:
        print(f"blockpool serve, all turns: TTFT mean {fmt(ours['ttft_all_mean_s'] * 1000)} ms at the client, "
              f"{fmt(ours['engine_ttft_all_mean_s'] * 1000)} ms on the engine thread")
    save("bench_server", args.out,
         params={"clients": args.clients, "turns": args.turns, "notes": args.notes, "max_tokens": args.max_tokens,
                 "kv_memory": args.kv_memory,
                 "model_dir": model_dir},
         headline={"metric": "TTFT turns 2+ speedup vs mlx_lm.server", "value": ttft_ratio, "goal": TTFT_GOAL,
                   "tok_s_ratio": toks_ratio, "tok_s_goal": TOKS_GOAL, "identical_replies": same},
         data=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
