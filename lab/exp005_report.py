"""EXP-005 artifacts: the references JSON, the results CSV and the Markdown report."""

from __future__ import annotations

import csv
from pathlib import Path
from .exp005_results import Exp005Result, PromptResult
from .report import fmt, machine_section, mark, markdown_table, write_json, write_text

REFERENCES_JSON = "exp_005_references.json"
RESULTS_CSV = "exp_005_results.csv"
PERF_STRETCH = 1.2  # the seed's stretch goal: engine within 20% of the reference
PERF_WARNING = 1.5  # the seed's quality gate warns past 50% slower
REPORT_MD = "EXP-005-blockpool-correctness.md"

CSV_COLUMNS = (
    "prompt", "match", "reference_len", "actual_len", "prompt_tokens", "generated_tokens", "token_count",
    "finish_reason", "no_error", "tokens_in_range", "reference_s", "engine_s", "time_ratio",
    "divergent_token_index", "expected_token_id", "expected_token_text", "actual_token_id",
    "actual_token_text", "error",
)


def write_artifacts(result: Exp005Result, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_references(result, out_dir / REFERENCES_JSON),
            write_results_csv(result, out_dir / RESULTS_CSV),
            write_text(out_dir / REPORT_MD, markdown_report(result))]


def write_references(result: Exp005Result, path: Path) -> Path:
    """Ground truth as the seed saves it (label -> text), with how it was made."""
    return write_json(path, {
        "generated_by": "mlx_lm.generate",
        "model": result.model_name,
        "max_tokens": result.max_tokens,
        "temperature": 0.0,
        "seed": 42,
        "prompts": {p.label: p.prompt for p in result.prompts},
        "references": {p.label: p.reference for p in result.prompts},
        "reference_s": {p.label: p.reference_s for p in result.prompts},
    })


def csv_row(p: PromptResult) -> dict[str, object]:
    d = p.divergence
    return {
        "prompt": p.label, "match": p.match, "reference_len": len(p.reference), "actual_len": len(p.actual),
        "prompt_tokens": p.prompt_tokens, "generated_tokens": p.generated_tokens, "token_count": p.token_count,
        "finish_reason": p.finish_reason or "", "no_error": p.no_error, "tokens_in_range": p.tokens_in_range,
        "reference_s": f"{p.reference_s:.4f}", "engine_s": f"{p.engine_s:.4f}",
        "time_ratio": "" if p.time_ratio is None else f"{p.time_ratio:.4f}",
        "divergent_token_index": "" if d is None or d.token_index is None else d.token_index,
        "expected_token_id": "" if d is None or d.expected_id is None else d.expected_id,
        "expected_token_text": "" if d is None or d.expected_text is None else d.expected_text,
        "actual_token_id": "" if d is None or d.actual_id is None else d.actual_id,
        "actual_token_text": "" if d is None or d.actual_text is None else d.actual_text,
        "error": p.error or "",
    }


def write_results_csv(result: Exp005Result, path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(p) for p in result.prompts)
    return path


def summary_line(result: Exp005Result) -> str:
    n = len(result.prompts)
    identical = sum(p.match for p in result.prompts)
    clean = sum(p.no_error for p in result.prompts)
    in_range = sum(p.tokens_in_range for p in result.prompts)
    status = "PASS (GO)" if result.go else "FAIL (NO-GO)"
    return (f"**EXP-005 {status}**: {identical}/{n} byte-identical to `mlx_lm.generate`, {clean}/{n} without "
            f"errors, {in_range}/{n} token counts in [1, {result.max_tokens}].")


def results_table(result: Exp005Result) -> str:
    rows = [(p.label, mark(p.match), p.finish_reason or "-", p.prompt_tokens, p.generated_tokens, p.token_count,
             mark(p.tokens_in_range), len(p.reference), len(p.actual), fmt(p.reference_s), fmt(p.engine_s),
             fmt(p.time_ratio)) for p in result.prompts]
    headers = ("Prompt", "Byte-identical", "Finish", "Prompt tokens", "Generated", "token_count", "In range",
               "Ref chars", "Engine chars", "Reference s", "Engine s", "Engine/Ref")
    return markdown_table(headers, rows)


def criteria_table(result: Exp005Result) -> str:
    ps, ratio, leak = result.prompts, result.time_ratio, result.leak
    perf = "-" if ratio is None else ("PASS" if ratio <= PERF_STRETCH else
                                      "FAIL" if ratio <= PERF_WARNING else "FAIL (WARNING: > 50% slower)")
    rows = [
        ("GO", f"{len(ps)}/{len(ps)} prompts byte-identical", f"{sum(p.match for p in ps)}/{len(ps)}",
         mark(all(p.match for p in ps))),
        ("GO", "No exceptions or errors", f"{sum(not p.no_error for p in ps)} failed",
         mark(all(p.no_error for p in ps))),
        ("GO", f"Generated tokens in [1, {result.max_tokens}]",
         ", ".join(str(p.generated_tokens) for p in ps), mark(all(p.tokens_in_range for p in ps))),
        ("Stretch", f"Engine time <= {PERF_STRETCH}x reference (total)", f"{fmt(ratio)}x", perf),
        ("Stretch", f"No leaks after {leak.runs} runs + free_agent_blocks",
         f"used {leak.initial_used} -> {leak.final_used} (peak {leak.peak_used}), {leak.errors} errors",
         mark(leak.ok)),
    ]
    return markdown_table(("Kind", "Criterion", "Measured", "Status"), rows)


def divergence_section(result: Exp005Result) -> str:
    lines = [f"- **{p.label}**: {p.divergence.describe()}" for p in result.prompts if p.divergence]
    lines += [f"- **{p.label}**: error: {p.error}" for p in result.prompts if p.error]
    return "\n".join(lines) if lines else "None: every output matched its reference byte for byte."


def outputs_section(result: Exp005Result) -> str:
    parts = []
    for p in result.prompts:
        parts.append(f"**{p.label}** — prompt {p.prompt!r}\n\n```text\n{p.reference}\n```")
        if not p.match:
            parts.append(f"engine output for **{p.label}**:\n\n```text\n{p.actual}\n```")
    return "\n\n".join(parts)


def markdown_report(result: Exp005Result) -> str:
    spec = result.spec
    setup = (
        f"- Model: `{result.model_name}` (KV dtype {spec.dtype}; {spec.n_layers} layers, {spec.n_kv_heads} KV "
        f"heads x {spec.head_dim})\n"
        f"- max_tokens={result.max_tokens}, greedy (temperature 0.0), `mx.random.seed(42)`\n"
        f"- Reference: `mlx_lm.generate` (timed); engine: `BlockPoolBatchEngine.submit` + `step()` (timed), "
        f"pool of 100 blocks of {spec.block_tokens} tokens; one untimed 2-token warm-up of each first\n"
        "- Timings come from a shared 2-core machine and are noisy; correctness is not."
    )
    return "\n\n".join([
        "# EXP-005: BlockPoolBatchEngine Correctness",
        summary_line(result),
        "## Setup\n\n" + setup,
        "## Results\n\n" + results_table(result),
        "## Criteria\n\n" + criteria_table(result),
        "## Divergences\n\n" + divergence_section(result),
        "## Reference outputs\n\n" + outputs_section(result),
        "## Machine\n\n" + machine_section(result.machine),
    ])
