"""Start the submission server as a child process on a free localhost port, and stop it (bench/server.py and
`eval/run.py --backend vllm` use it). The vLLM backend runs in the vLLM venv (`make vllm-venv`): `vllm_python()`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from lit_gpt.utils import UserError

ROOT = Path(__file__).resolve().parents[1]


def vllm_python() -> Optional[str]:
    """The python of the vLLM venv: $VLLM_VENV, else the repo's .venv-vllm; None where neither has vllm."""
    for venv in filter(None, [os.environ.get("VLLM_VENV"), ROOT / ".venv-vllm"]):
        python = Path(venv) / "bin" / "python"
        if not python.is_file():
            continue
        # `make vllm-venv` marks a finished build; another venv is asked (importing vllm takes seconds).
        if (Path(venv) / ".installed").is_file() or subprocess.run(
                [str(python), "-c", "import vllm"], capture_output=True, timeout=300).returncode == 0:
            return str(python)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, log_path: Path, python: str = sys.executable,
                 timeout: float = 600) -> tuple[subprocess.Popen, str]:
    """uvicorn submission.main:app with `env` added to ours; returns (process, url) once /health answers."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [python, "-m", "uvicorn", "submission.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **{k: str(v) for k, v in env.items()}},
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the server exited; see {log_path}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise UserError(f"the server did not come up in {timeout:.0f} s; see {log_path}")


def stop_server(proc: Optional[subprocess.Popen]) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
