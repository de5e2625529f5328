"""Starts a real ``blockpool serve`` subprocess on 127.0.0.1 for the server tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MODEL_ID = "SmolLM2-135M-Instruct"
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool(self, **headers: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/pool", headers=headers, timeout=30).json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env() -> dict[str, str]:
    """The test's environment without any user config or BLOCKPOOL_SERVE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKPOOL_SERVE_")}
    env["BLOCKPOOL_CONFIG"] = str(Path(tempfile.gettempdir()) / "blockpool-test-no-config.toml")
    return env


def start_serve(port: int, *args: str) -> ServerProcess:
    """``blockpool serve ARGS`` on ``port``, answering /health; the caller stops it (``stop``)."""
    log = Path(tempfile.mkstemp(prefix="blockpool-serve-", suffix=".log")[1])
    command = [sys.executable, "-m", "blockpool", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=serve_env())
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_healthy(server)
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
def running_server(*args: str) -> Iterator[ServerProcess]:
    """``blockpool serve ARGS`` on a free loopback port, up and answering /health; stopped afterwards."""
    server = start_serve(free_port(), *args)
    try:
        yield server
    finally:
        stop(server)


def wait_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"blockpool serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"blockpool serve did not answer /health in {START_TIMEOUT_S} s:\n{server.log()}")


def leaked_blocks(pool: dict[str, Any]) -> int:
    """Used blocks not held by an idle conversation (0 once every request has finished)."""
    idle = sum(a["blocks"] for a in pool["agents"] if a["state"] in ("idle", "spilled"))
    return pool["used_blocks"] - idle
