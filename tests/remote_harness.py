"""A real ``mlx_lm.server`` on the embedded model's converted folder (offline), for the TUI's
``--server`` tests (``blockpool serve`` comes from ``tests.server_harness``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.server_harness import ServerProcess, stop, wait_healthy


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
        wait_healthy(server)
        yield server
    finally:
        stop(server)
