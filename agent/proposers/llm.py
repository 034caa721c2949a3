"""The `openai` proposer: an OpenAI-compatible chat endpoint writes the next experiment as JSON edits.

A reply that is not valid JSON, fails validation, or whose edits do not apply goes back to the model
with the exact reason, at most `repairs` times. Transient API failures (429, 5xx, timeouts, dropped
connections) are retried with exponential backoff; when the endpoint stays down, LLMUnavailable ends
the run cleanly (everything already recorded stays in the ledger).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from agentgolf.agent.proposers.digest import line, similar
from agentgolf.agent.proposers.playbook import set_edits
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
    temperature: float = 0.7
    max_output_tokens: int = 4096
    usd_per_mtok_in: float = Field(2.0, ge=0, description="price per million prompt tokens")
    usd_per_mtok_out: float = Field(8.0, ge=0, description="price per million completion tokens")
    similar_threshold: float = Field(
        0.3, ge=0, le=1, description="word overlap (Jaccard) above which a past idea is shown as similar"
    )
    similar_shown: int = Field(3, ge=0, description="similar past ideas shown before a proposal is run")


NAME = "openai"
JSON_BLOCK = re.compile(r"\{.*\}", re.S)


class LLMUnavailable(AgentgolfError):
    """The endpoint kept failing after every retry, or refuses our key: stop the run, lose nothing."""


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
                f"the openai proposer needs an API key in ${config.api_key_env} (or use --proposer playbook)"
            )
        import openai  # here, not at the top: loading a workspace must not load the client library

        self.config = config
        self.client = openai.OpenAI(
            api_key=key, base_url=config.base_url, timeout=config.request_timeout_s, max_retries=0
        )
        self.total = Usage()

    def complete(self, messages: list[dict[str, str]]) -> tuple[str, Usage]:
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
                    response = self.client.chat.completions.create(
                        model=cfg.model,
                        messages=messages,
                        temperature=cfg.temperature,
                        max_tokens=cfg.max_output_tokens,
                    )
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise LLMUnavailable(
                f"LLM endpoint failed {cfg.api_attempts} times; last error: {_brief(last)}"
            ) from exc
        except (
            openai.APIError
        ) as exc:  # 4xx other than 429: our request or key is wrong; retrying cannot help
            raise LLMUnavailable(f"LLM endpoint refused the request: {_brief(exc)}") from exc
        usage = Usage()
        if response.usage is not None:
            usage = Usage(
                prompt_tokens=response.usage.prompt_tokens or 0,
                completion_tokens=response.usage.completion_tokens or 0,
            )
            usage.usd = (
                usage.prompt_tokens * cfg.usd_per_mtok_in + usage.completion_tokens * cfg.usd_per_mtok_out
            ) / 1e6
        self.total = self.total + usage
        text = (response.choices[0].message.content or "") if response.choices else ""
        return text, usage

    def __call__(self, ctx: ProposalContext, tree: Path) -> Proposal:
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
                if not warned_similar:
                    near = similar(
                        ctx.history,
                        proposal.title,
                        proposal.hypothesis,
                        self.config.similar_shown,
                        self.config.similar_threshold,
                    )
                    if near:
                        warned_similar = True
                        note = "\n".join(line(e) for e in near)
                        messages.append({"role": "user", "content": render("similar", similar=note)})
                        continue
                edits = set_edits(ctx.source, proposal.set, ctx.trainer_env) + proposal.edits
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
