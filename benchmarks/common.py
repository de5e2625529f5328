"""Shared pieces of the benchmark scripts: arguments, prompts, timing records, JSON results.

Every benchmark compares the engine with mlx-lm's own function in the same run, prints
a table and writes ``benchmarks/results/<name>.json`` with the raw samples.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine import load_model
from engine.loading.paths import DEFAULT_MODEL_NAME
from lab.report import machine_info, text_table, write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Distinct prompts of different lengths; the greedy output of each runs past 64 tokens on
# the embedded SmolLM2 (checked with mlx-lm's batch_generate).
PROMPTS = (
    "The quick brown fox",
    "Explain quantum computing in detail",
    "Once upon a time, in a small village by the sea,",
    "The history of the Roman Empire begins",
    "Here is a detailed guide to growing tomatoes:",
    "The planets of the solar system are",
    "Dear friend, I am writing to tell you about my trip to the mountains.",
    "The three most useful ideas in computer science are",
)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=None, help="model name for engine.load_model (default: embedded SmolLM2)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a fast look")
    parser.add_argument("--out", type=Path, default=None, help="result JSON path (default: benchmarks/results/)")
    return parser


def load(name: str | None) -> tuple[Any, Any]:
    tic = time.perf_counter()
    model, tokenizer = load_model(name)
    print(f"model {name or 'embedded ' + DEFAULT_MODEL_NAME} loaded in {time.perf_counter() - tic:.1f} s")
    return model, tokenizer


@dataclass(frozen=True)
class RunTiming:
    """One generation: time to first token, total wall time, tokens generated (EOS included)."""

    ttft_s: float
    total_s: float
    tokens: int
    text: str = ""

    @property
    def decode_s(self) -> float:
        return self.total_s - self.ttft_s

    @property
    def decode_tok_s(self) -> float | None:
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else None


def decode_rate(runs: list[RunTiming]) -> float | None:
    """Pooled decode tok/s over runs: all tokens after the first, over all decode time."""
    tokens = sum(r.tokens - 1 for r in runs if r.tokens > 1)
    seconds = sum(r.decode_s for r in runs if r.tokens > 1)
    return tokens / seconds if seconds > 0 else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or not theirs else ours / theirs


def print_table(title: str, headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    print(f"\n{title}\n{text_table(headers, rows)}")


def save(name: str, out: Path | None, *, params: dict[str, Any], headline: dict[str, Any], data: Any) -> Path:
    """Write the result JSON: machine, parameters, the headline figure, raw data."""
    path = out or RESULTS_DIR / f"{name}.json"
    write_json(path, {"benchmark": name, "machine": machine_info(), "params": params,
                      "headline": headline, "data": data})
    print(f"wrote {path}")
    return path


def timing_dict(run: RunTiming) -> dict[str, Any]:
    d = asdict(run)
    d.pop("text")
    d["decode_tok_s"] = run.decode_tok_s
    return d
