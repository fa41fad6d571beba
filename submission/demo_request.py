"""Start the server on a checkpoint, send it one `/process` request as HELM would, print the answer, stop it.

    python submission/demo_request.py --checkpoint_dir checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lit_gpt.utils import UserError, check_valid_checkpoint_dir, cli


wd = Path(__file__).parent.parent.resolve()

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(
    checkpoint_dir: Path,
    prompt: str = "The capital of France is",
    max_new_tokens: int = 20,
    startup_timeout: float = 300.0,
) -> dict:
    """Serves `checkpoint_dir` on a free localhost port and prints the server's answer to one greedy request.

    Args:
        checkpoint_dir: A converted or merged checkpoint dir.
        prompt: The prompt sent to `/process`.
        max_new_tokens: The most tokens to generate.
        startup_timeout: Seconds to wait for the server's /health before giving up.
    """
    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    port = free_port()
    env = {**os.environ, "CHECKPOINT_DIR": str(checkpoint_dir.resolve())}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "submission.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=wd, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if server.poll() is not None:
                raise UserError(f"the server exited with code {server.returncode} before answering /health")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise UserError(f"the server did not answer /health within {startup_timeout:.0f}s")
            time.sleep(1)
        # The body HELM's HTTPModelClient sends (temperature 1e-7 is HELM's greedy).
        body = {"prompt": prompt, "temperature": 1e-7, "num_return_sequences": 1, "max_new_tokens": max_new_tokens,
                "top_p": 1.0, "echo_prompt": False, "top_k_per_token": 1, "stop_sequences": []}
        response = httpx.post(f"{url}/process", json=body, timeout=300)
        response.raise_for_status()
        result = response.json()
        print(f"POST /process {prompt!r} -> {result['text']!r} ({len(result['tokens'])} tokens, "
              f"{result['request_time']:.2f}s)")
        return result
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    cli(main, as_positional=False)
