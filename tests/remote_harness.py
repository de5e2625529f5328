"""Servers for the TUI's ``--server`` tests: ``blockpool serve`` on a port that a restart can reuse,
and a real ``mlx_lm.server`` on the same converted model folder (offline)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.server_harness import ServerProcess, _wait_healthy, serve_env


def start_serve(port: int, *args: str) -> ServerProcess:
    """``blockpool serve ARGS`` on ``port``, answering /health; the caller stops it (``stop``)."""
    log = Path(tempfile.mkstemp(prefix="blockpool-serve-", suffix=".log")[1])
    command = [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=serve_env())
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_healthy(server)
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: ServerProcess) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def mlx_lm_server(port: int) -> Iterator[ServerProcess]:
    """``mlx_lm.server`` on the embedded model's converted folder (the one blockpool loads), offline."""
    from engine.loading.loader import embedded_model_dir

    model_dir = embedded_model_dir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = Path(tempfile.mkstemp(prefix="mlx-lm-server-", suffix=".log")[1])
    command = [sys.executable, "-m", "engine.fastblas", sys.executable, "-m", "mlx_lm", "server", "--model",
               str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_healthy(server)
        yield server
    finally:
        stop(server)
