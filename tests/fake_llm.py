"""A real HTTP server on 127.0.0.1 that speaks the OpenAI protocol with scripted replies.

It stands in for the LLM endpoint, which cannot exist on a machine with no network; everything else
(the openai client, its HTTP stack, our retries and parsing) runs for real against it. By default it is
a plain chat-completions endpoint: it answers the Responses API with 404 and a request that offers tools
with 400, as servers without them do. `responses=True` and `tools=True` turn those on; then the script's
replies may be tool calls (`tool_reply`) or Responses API objects (`responses_reply`); a callable step is
called when its request arrives and answers with what it returns. Every request is recorded in `log` as
(path, body); those the script answered also in `requests`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentgolf.agent.proposers.llm.proposer import LLMConfig


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


def tool_reply(
    calls: list[tuple[str, dict[str, Any]]], prompt_tokens: int = 1000, completion_tokens: int = 50
) -> tuple[int, dict[str, Any]]:
    """A chat completion whose message calls tools: [(name, arguments), ...]."""
    status, body = reply("", prompt_tokens, completion_tokens)
    message = body["choices"][0]["message"]
    message["content"] = None
    message["tool_calls"] = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for i, (name, args) in enumerate(calls)
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    return status, body


def responses_reply(
    calls: list[tuple[str, dict[str, Any]]],
    text: str = "",
    input_tokens: int = 1000,
    output_tokens: int = 50,
) -> tuple[int, dict[str, Any]]:
    """A Responses API object: an optional message, then function calls [(name, arguments), ...]."""
    output: list[dict[str, Any]] = []
    if text:
        output.append(
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for i, (name, args) in enumerate(calls):
        call = {"type": "function_call", "id": f"fc_{i}", "call_id": f"call_{i}", "name": name}
        output.append({**call, "arguments": json.dumps(args), "status": "completed"})
    return 200, {
        "id": "resp_test",
        "object": "response",
        "created_at": int(time.time()),
        "model": "test-model",
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
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
    def __init__(self, script: list[Any], *, responses: bool = False, tools: bool = False):
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.responses, self.tools = responses, tools
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.log.append((self.path, body))
                if self.path.endswith("/responses") and not fake.responses:
                    step: Any = error(404, "Not Found")
                elif "tools" in body and not fake.tools:
                    step = error(400, "tools are not supported by this server")
                else:
                    fake.requests.append(body)
                    step = fake.script.pop(0) if fake.script else error(500, "script exhausted")
                if isinstance(step, Stall):
                    time.sleep(step.seconds)
                    step = step.then
                if callable(step):  # a scripted moment: do something (wait, change the ledger), then reply
                    step = step()
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
