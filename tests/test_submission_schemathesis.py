"""Property-based fuzzing of the server's OpenAPI schema (schemathesis): no input, valid or not, gets a 5xx.

Schemathesis' own pytest plugin (`from_fixture`) does not work with pytest 9, so each operation's hypothesis strategy
is driven directly: up to 50 valid and 50 invalid examples per endpoint, derandomized so CI runs are repeatable.
"""

from __future__ import annotations

import pytest

from submission.main import create_app, load_server
from test_submission_engine import make_tiny_checkpoint

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")  # schemathesis' own dependency


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    # A small context, so that fuzzed max_new_tokens and prompts run into the limits.
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), block_size=64)
    server = load_server(ckpt, device="cpu", precision="32-true", max_batch_size=4)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(server))
    server.engine.stop()


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /process", "POST /tokenize",
                                                                        "POST /decode", "GET /health"}
    for op in operations:
        if mode == schemathesis.GenerationMode.NEGATIVE and op.path == "/health":
            continue  # no parameters: there is no invalid request to generate

        @hypothesis.given(case=op.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=50, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
            if mode == schemathesis.GenerationMode.POSITIVE and op.path in ("/tokenize", "/health"):
                assert response.status_code == 200, (case.path, case.body, response.text[:500])

        check()
