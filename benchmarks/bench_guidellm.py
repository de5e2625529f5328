"""guidellm against blockpool serve and mlx_lm.server: concurrent streams, synthetic prompts, same model.

guidellm (PyPI) pulls torch and transformers, which the project's venv does not need, so it lives
in its own venv: ``--guidellm-venv`` (default /work/guidellm-venv, or $GUIDELLM_VENV), created and
filled with ``pip install guidellm`` on first use. Both servers run one after the other as
subprocesses on 127.0.0.1 on the converted model folder, which is also guidellm's tokenizer.
Prints a table (errors, TTFT p50, output tok/s) and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_server import free_port, load_average, server
from common import base_parser, print_table, save

from engine.loading.loader import embedded_model_dir

DEFAULT_VENV = Path(os.environ.get("GUIDELLM_VENV", "/work/guidellm-venv"))


def guidellm(venv: Path) -> Path:
    """The guidellm executable of ``venv``, installing it there first if needed."""
    exe = venv / "bin" / "guidellm"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "guidellm"], check=True)
    return exe


def run_guidellm(exe: Path, url: str, model: str, tokenizer: str, streams: int, args: Any) -> dict[str, Any]:
    """One concurrent run; the figures that matter from guidellm's JSON report."""
    out = Path(tempfile.mkdtemp(prefix="guidellm-"))
    data = f"kind=synthetic_text,prompt_tokens={args.prompt_tokens},output_tokens={args.output_tokens}"
    backend = f"kind=openai_http,target={url},model={model}"
    if args.turns > 1:  # conversations: each turn resends the history, through the chat API
        data += f",turns={args.turns},prefix_tokens={args.prefix_tokens},prefix_count={args.prefix_count}"
        backend += ",request_format=/v1/chat/completions"
    command = [str(exe), "run", "--backend", backend,
               "--profile", f"kind=concurrent,streams={streams}",
               "--constraint", f"kind=max_requests,count={args.max_requests}",
               "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
               "--data", data,
               "--output", "kind=json", "--disable-console-interactive"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(command, cwd=out, env=env, check=True, stdout=subprocess.DEVNULL)
    bench = json.loads((out / "benchmarks.json").read_text())["benchmarks"][0]
    metrics = bench["metrics"]
    totals = metrics["request_totals"]
    output_tokens = metrics["output_token_count"]["successful"]["total_sum"]
    return {"streams": streams, "successful": totals.get("successful"), "errored": totals.get("errored"),
            "ttft_p50_ms": metrics["time_to_first_token_ms"]["successful"]["median"],
            "output_tok_s": output_tokens / bench["duration"], "duration_s": bench["duration"]}


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--streams", default="4", help="comma-separated concurrencies, e.g. 4,8,16")
    parser.add_argument("--max-requests", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--turns", type=int, default=1, help="guidellm's multi-turn mode: turns per conversation")
    parser.add_argument("--prefix-tokens", type=int, default=256, help="multi-turn: a shared prefix of this many tokens")
    parser.add_argument("--prefix-count", type=int, default=2, help="multi-turn: how many distinct prefixes")
    parser.add_argument("--guidellm-venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args()
    exe = guidellm(args.guidellm_venv)
    model_dir = str(embedded_model_dir())
    streams = [int(s) for s in args.streams.split(",")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "BLOCKPOOL_CONFIG": str(Path(tempfile.gettempdir()) / "blockpool-bench-no-config.toml")}
    fast = [sys.executable, "-m", "engine.fastblas"]
    top = max(streams)
    commands = {
        "blockpool": lambda port: [*fast, sys.executable, "-m", "blockpool", "serve", "--model", model_dir,
                                   "--served-model-name", "bench", "--port", str(port), "--max-batch", str(top)],
        "mlx_lm": lambda port: [*fast, sys.executable, "-m", "mlx_lm", "server", "--model", model_dir,
                                "--port", str(port), "--host", "127.0.0.1", "--decode-concurrency", str(top),
                                "--prompt-concurrency", str(top), "--log-level", "WARNING"],
    }
    served = {"blockpool": "bench", "mlx_lm": "default_model"}
    results: dict[str, list[dict[str, Any]]] = {}
    loads: dict[str, str] = {}
    for name, command in commands.items():
        port = free_port()
        loads[name] = load_average()
        print(f"{name} on {model_dir} (load {loads[name]})", flush=True)
        with server(command(port), port, env) as url:
            results[name] = [run_guidellm(exe, url, served[name], model_dir, n, args) for n in streams]
    rows = [(name, r["streams"], r["errored"], f"{r['ttft_p50_ms']:.0f}", f"{r['output_tok_s']:.1f}")
            for name, runs in results.items() for r in runs]
    print_table(f"guidellm concurrent ({args.prompt_tokens} prompt / {args.output_tokens} output tokens"
                f"{f', {args.turns} turns' if args.turns > 1 else ''}; load {loads})", ("server", "streams", "errors", "TTFT p50 ms", "output tok/s"), rows)
    save("guidellm" if args.turns == 1 else "guidellm_multiturn", args.out, params={**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                     "load": loads},
         headline={"metric": "errors (both servers)", "value": sum(r["errored"] or 0 for v in results.values()
                                                                  for r in v)},
         data=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
