"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol with scripted replies.

It stands in for the LLM endpoint, which cannot exist on a machine with no network; everything else
(the openai client, its HTTP stack, our retries and parsing) runs for real against it.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentgolf.agent.proposers.llm import LLMConfig


def reply(
    content: str, prompt_tokens: int = 1000, completion_tokens: int = 200
) -> tuple[int, dict[str, Any]]:
    return 200, {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "test-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error(status: int, message: str = "scripted failure") -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "server_error", "code": None}}


def llm_config(url: str, monkeypatch, **overrides: Any) -> LLMConfig:
    """An LLMConfig pointed at a FakeLLM, with a test key in the environment and fast retries."""
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    settings: dict[str, Any] = dict(
        model="test-model",
        base_url=url,
        api_key_env="TEST_LLM_KEY",
        request_timeout_s=1.0,
        api_attempts=4,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )
    return LLMConfig(**{**settings, **overrides})


class Stall:
    """Hold the connection open for `seconds` before answering: the client should time out."""

    def __init__(self, seconds: float, then: tuple[int, dict[str, Any]] | None = None):
        self.seconds = seconds
        self.then = then or error(500)


class FakeLLM:
    def __init__(self, script: list[Any]):
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                fake.requests.append(json.loads(self.rfile.read(length) or b"{}"))
                step = fake.script.pop(0) if fake.script else error(500, "script exhausted")
                if isinstance(step, Stall):
                    time.sleep(step.seconds)
                    step = step.then
                status, body = step
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
