"""The `openai` proposer: an OpenAI-compatible endpoint writes the next experiment.

Where the endpoint supports function calling, the model works in a short tool session on the worktree
(session.py: view, search, edit, set, show_experiment, submit), over the Responses API where offered,
else chat completions. What the endpoint supports is detected once per run, on the first proposal (a
refusal of the Responses API, then of tools, falls back to the next mode), and recorded with each
proposal. Elsewhere, and with `tools: "off"`, it replies with one JSON object of search/replace edits
and `set` values: a reply that is not valid JSON, fails validation, or whose edits do not apply goes
back to the model with the exact reason, at most `repairs` times. Transient API failures (429, 5xx,
timeouts, dropped connections) are retried with exponential backoff; when the endpoint stays down,
LLMUnavailable ends the run cleanly (everything already recorded stays in the ledger).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from agentgolf.agent.proposers.briefing.digest import line, similar
from agentgolf.agent.proposers.briefing.retrieval import GitDiffs
from agentgolf.agent.proposers.knobs import set_edits
from agentgolf.agent.proposers.llm.session import CHAT, RESPONSES, Refused, Session
from agentgolf.agent.proposers.proposal import (
    Proposal,
    ProposalContext,
    ProposalError,
    Usage,
    apply_edits,
    check_compiles,
    diff_fingerprint,
)
from agentgolf.errors import AgentgolfError
from agentgolf.prompts.render import proposal_messages, render


class LLMConfig(BaseModel):
    """The `openai` proposer: any OpenAI-compatible endpoint; the key is read from the environment."""

    model: str = "gpt-4.1"
    base_url: str | None = Field(None, description="None: the OpenAI API; else e.g. http://localhost:8000/v1")
    api_key_env: str = "OPENAI_API_KEY"
    request_timeout_s: float = Field(180.0, gt=0)
    api_attempts: int = Field(6, ge=1, description="tries per request on rate limits, 5xx and timeouts")
    backoff_initial_s: float = Field(2.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    repairs: int = Field(3, ge=0, description="times an invalid proposal is sent back with the reason")
    temperature: float | None = Field(0.7, description="None: not sent (models that take no temperature)")
    max_output_tokens: int = 4096
    usd_per_mtok_in: float = Field(2.0, ge=0, description="price per million prompt tokens")
    usd_per_mtok_out: float = Field(8.0, ge=0, description="price per million completion tokens")
    usd_per_mtok_cached_in: float | None = Field(
        None,
        ge=0,
        description="price per million prompt tokens served from the endpoint's prefix cache, "
        "where it reports them; None: the full prompt price",
    )
    similar_threshold: float = Field(
        0.3, ge=0, le=1, description="BM25 score, relative to the idea's own, above which a past one is shown"
    )
    similar_shown: int = Field(3, ge=0, description="similar past ideas shown before a proposal is run")
    tools: Literal["auto", "off"] = Field(
        "auto", description="auto: a tool session where the endpoint supports function calling; off: JSON"
    )
    api: Literal["auto", "responses", "chat"] = Field(
        "auto", description="auto: the Responses API where offered, else chat completions"
    )
    max_turns: int = Field(12, ge=2, description="requests in one tool session; the last offers only submit")
    max_session_tokens: int = Field(400_000, ge=1, description="tokens one tool session may spend")
    max_session_usd: float = Field(2.0, gt=0, description="dollars one tool session may spend")


NAME = "openai"
JSON_MODE = "json"
JSON_BLOCK = re.compile(r"\{.*\}", re.S)


UNSUPPORTED = frozenset({400, 404, 405, 422, 501})  # what an endpoint answers to an API or tools it lacks


class LLMUnavailable(AgentgolfError):
    """The endpoint kept failing after every retry, or refuses our key: stop the run, lose nothing."""


class LLMRefused(LLMUnavailable):
    """A 4xx other than 429: `unsupported` when it may mean the API or the tools are not offered."""

    def __init__(self, message: str, status: int | None):
        super().__init__(message)
        self.unsupported = status in UNSUPPORTED


def _transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APITimeoutError | openai.APIConnectionError)


class LLMProposer:
    """Holds the client and the running cost; called once per experiment."""

    def __init__(self, config: LLMConfig):
        key = os.environ.get(config.api_key_env)
        if not key:
            raise AgentgolfError(
                f"the openai proposer needs an API key in ${config.api_key_env} (or use --proposer search, the offline default)"
            )
        import openai  # here, not at the top: loading a workspace must not load the client library

        self.config = config
        self.client = openai.OpenAI(
            api_key=key, base_url=config.base_url, timeout=config.request_timeout_s, max_retries=0
        )
        self.total = Usage()
        self.endpoint: dict[str, Any] | None = None  # what the endpoint supports: detected once per run

    def request(self, create: Callable[[], Any]) -> Any:
        """One API call with retries on transient failures; a refusal is LLMRefused, an outage LLMUnavailable."""
        import openai

        cfg = self.config
        retrying = Retrying(
            stop=stop_after_attempt(cfg.api_attempts),
            wait=wait_exponential(multiplier=cfg.backoff_initial_s, max=cfg.backoff_max_s),
            retry=retry_if_exception(_transient),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return create()
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise LLMUnavailable(
                f"LLM endpoint failed {cfg.api_attempts} times; last error: {_brief(last)}"
            ) from exc
        except (
            openai.APIError
        ) as exc:  # 4xx other than 429: our request or key is wrong; retrying cannot help
            status = getattr(exc, "status_code", None)
            raise LLMRefused(f"LLM endpoint refused the request: {_brief(exc)}", status) from exc
        raise AssertionError("unreachable")

    def sampling(self) -> dict[str, float]:
        return {} if self.config.temperature is None else {"temperature": self.config.temperature}

    def price(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
        """What a request cost: cached prompt tokens at the cached price (they are part of prompt_tokens)."""
        cfg = self.config
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = (
            cfg.usd_per_mtok_in if cfg.usd_per_mtok_cached_in is None else cfg.usd_per_mtok_cached_in
        )
        usd = (
            (prompt_tokens - cached) * cfg.usd_per_mtok_in
            + cached * cached_price
            + completion_tokens * cfg.usd_per_mtok_out
        ) / 1e6
        usage = Usage(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached, usd=usd
        )
        self.total = self.total + usage
        return usage

    def complete(self, messages: list[dict[str, str]]) -> tuple[str, Usage]:
        """One chat completion (the single-shot JSON path)."""
        cfg = self.config
        response = self.request(
            lambda: self.client.chat.completions.create(
                model=cfg.model, messages=messages, max_tokens=cfg.max_output_tokens, **self.sampling()
            )
        )
        usage = response.usage
        spent = self.price(usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else Usage()
        text = (response.choices[0].message.content or "") if response.choices else ""
        return text, spent

    def modes(self) -> list[str]:
        """The ways to ask, richest first: the one detected in this run, else every candidate."""
        if self.endpoint is not None:
            return [self.endpoint["mode"]]
        cfg = self.config
        if cfg.tools == "off":
            return [JSON_MODE]
        apis = {"auto": [RESPONSES, CHAT], "responses": [RESPONSES], "chat": [CHAT]}[cfg.api]
        return [*apis, JSON_MODE]

    def __call__(self, ctx: ProposalContext, tree: Path) -> Proposal:
        refusals = []
        for mode in self.modes():
            if mode == JSON_MODE:
                proposal = self._json(ctx, tree)
            else:
                try:
                    proposal = Session(self, ctx, tree, mode).run(detected=self.endpoint is not None)
                except Refused as exc:
                    refusals.append(f"{mode}: {exc}")
                    _reset(tree)
                    continue
            if self.endpoint is None:
                self.endpoint = {"mode": mode, "model": self.config.model, "refused": refusals}
            proposal.session = {**proposal.session, "endpoint": self.endpoint}
            return proposal
        raise AssertionError("the JSON mode always answers or raises")

    def _json(self, ctx: ProposalContext, tree: Path) -> Proposal:
        """The single-shot JSON format, with repairs: for endpoints without tools."""
        messages = proposal_messages(ctx)
        spent = Usage()
        warned_similar = False
        last_reason = ""
        for _ in range(self.config.repairs + 1):
            text, usage = self.complete(messages)
            spent = spent + usage
            messages.append({"role": "assistant", "content": text})
            try:
                proposal = parse_proposal(text)
                if not warned_similar:  # the idea's words against past titles, hypotheses and diffs
                    near = similar(
                        ctx.history,
                        proposal.title,
                        proposal.hypothesis,
                        self.config.similar_shown,
                        self.config.similar_threshold,
                        GitDiffs(ctx.root).prefetch(ctx.history),
                    )
                    if near:
                        warned_similar = True
                        note = "\n".join(line(e) for e in near)
                        messages.append({"role": "user", "content": render("similar", similar=note)})
                        continue
                edits = set_edits(ctx.source, proposal.set, ctx.trainer_env, ctx.trainer) + proposal.edits
                check_compiles(apply_edits(tree, edits))
                repeat = _repeat_of(ctx, tree)
                if repeat is not None:
                    raise ProposalError(f"this exact change was already tried as experiment {repeat}")
            except ProposalError as exc:
                _reset(tree)
                last_reason = str(exc)
                messages.append({"role": "user", "content": render("repair", reason=last_reason)})
                continue
            proposal.usage = spent
            proposal.session = {"mode": JSON_MODE, "turns": len(messages) // 2}
            return proposal
        raise ProposalError(
            f"no usable proposal after {self.config.repairs + 1} replies; last problem: "
            + last_reason.split(". The closest lines")[0],
            usage=spent,
        )


def parse_proposal(text: str) -> Proposal:
    match = JSON_BLOCK.search(text)
    if match is None:
        raise ProposalError("the reply contains no JSON object")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ProposalError(
            f"the JSON does not parse: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    try:
        proposal = Proposal.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "object"
        raise ProposalError(f"field {where}: {first['msg']}") from exc
    if not proposal.edits and not proposal.set:
        raise ProposalError("field edits: at least one edit (or a `set` of settings) is required")
    return proposal


def _repeat_of(ctx: ProposalContext, tree: Path) -> int | None:
    diff = subprocess.run(["git", "diff"], cwd=tree, capture_output=True, text=True, check=True).stdout
    fingerprint = diff_fingerprint(diff)
    for e in ctx.history:
        if e.fingerprint == fingerprint and e.kind == "proposal":
            return e.id
    return None


def _reset(tree: Path) -> None:
    subprocess.run(["git", "checkout", "--", "."], cwd=tree, capture_output=True, check=True)


def _brief(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    status = getattr(exc, "status_code", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}" + (f" {status}" if status else "") + f": {text[:160]}"
