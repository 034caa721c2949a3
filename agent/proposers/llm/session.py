"""A tool-calling proposal session: the model reads and edits the worktree with tools (tools.py) for a few
turns and ends with `submit`; over the OpenAI Responses API where the endpoint offers it, else over chat
completions with function calling.

Turns, tokens and dollars are capped (LLMConfig.max_turns, max_session_tokens, max_session_usd): the
last turn allowed offers only `submit`, and a session that still has not submitted a usable change ends
as a ProposalError that carries its cost. A reply without tool calls is read as the single-shot JSON
format, so a model that ignores the tools still gets its proposal tried.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgolf.agent.proposers.knobs import set_edits
from agentgolf.agent.proposers.llm.tools import TOOLS, Workbench, compile_problem
from agentgolf.agent.proposers.proposal import (
    Proposal,
    ProposalContext,
    ProposalError,
    Usage,
    apply_edits,
)
from agentgolf.prompts.render import proposal_messages

if TYPE_CHECKING:
    from agentgolf.agent.proposers.llm.proposer import LLMProposer

RESPONSES, CHAT = "responses", "chat_tools"
NUDGE = (
    "Use the tools (view, search, edit, set, apply_technique, try, show_experiment, refresh) to make one "
    "change, then call submit."
)
LAST_TURN = "This is your last turn: call submit now to describe the change you made."


class Refused(Exception):
    """The endpoint refused this API or its tools on the session's first request: try the next mode."""


class Session:
    """One proposal's conversation in one API mode; `turn()` sends everything so far and runs the tools."""

    def __init__(self, llm: LLMProposer, ctx: ProposalContext, tree: Path, mode: str):
        self.llm, self.ctx, self.mode = llm, ctx, mode
        self.bench = Workbench(ctx, tree)
        self.tree = tree
        messages = proposal_messages(ctx, tools=True, max_turns=llm.config.max_turns)
        system, user = (m["content"] for m in messages)
        self.system = system
        self.items: list[Any] = [{"role": "user", "content": user}]  # Responses input, or chat messages
        if mode == CHAT:
            self.items.insert(0, {"role": "system", "content": system})
        self.spent = Usage()
        self.turns = 0

    def run(self, detected: bool) -> Proposal:
        """Turns until `submit` accepts a change; `detected`: this mode already worked in this run."""
        from agentgolf.agent.proposers.llm.proposer import LLMRefused

        cfg = self.llm.config
        final_sent = False
        while self.bench.submitted is None:
            if self.turns >= cfg.max_turns or final_sent:
                raise ProposalError(
                    f"the tool session ended after {self.turns} turns without a usable submit (caps: "
                    f"{cfg.max_turns} turns, {cfg.max_session_tokens:,} tokens, ${cfg.max_session_usd:g})",
                    usage=self.spent,
                )
            tokens = self.spent.prompt_tokens + self.spent.completion_tokens
            over = tokens >= cfg.max_session_tokens or self.spent.usd >= cfg.max_session_usd
            if self.turns + 1 >= cfg.max_turns or over:
                self._say(LAST_TURN)
                final_sent = True
            try:
                calls, text = self._request(final_sent)
            except LLMRefused as exc:
                if exc.unsupported and self.turns == 0 and not detected:
                    raise Refused(str(exc)) from exc
                if not exc.unsupported:
                    raise
                raise ProposalError(
                    f"the endpoint refused turn {self.turns + 1}: {exc}", usage=self.spent
                ) from exc
            self.turns += 1
            if not calls:
                self._plain_reply(text)
                continue
            for call_id, name, arguments in calls:
                self._answer(call_id, self.bench.call(name, arguments))
        proposal = self.bench.submitted
        proposal.usage = self.spent
        proposal.session = {"mode": self.mode, "turns": self.turns, "tool_calls": dict(self.bench.calls)}
        return proposal

    def _request(self, final: bool) -> tuple[list[tuple[str, str, str]], str]:
        cfg, client = self.llm.config, self.llm.client
        if self.mode == RESPONSES:
            tools = [{"type": "function", **t} for t in TOOLS]
            choice: Any = {"type": "function", "name": "submit"} if final else "auto"
            response = self.llm.request(
                lambda: client.responses.create(
                    model=cfg.model,
                    instructions=self.system,
                    input=self.items,
                    tools=tools,
                    tool_choice=choice,
                    max_output_tokens=cfg.max_output_tokens,
                    **self.llm.sampling(),
                )
            )
            usage = response.usage
            details = getattr(usage, "input_tokens_details", None) if usage else None
            self._spend(
                usage.input_tokens if usage else 0,
                usage.output_tokens if usage else 0,
                getattr(details, "cached_tokens", 0) or 0,
            )
            calls, texts = [], []
            for item in response.output or []:
                self.items.append(item.model_dump(exclude_none=True))
                if item.type == "function_call":
                    calls.append((item.call_id, item.name, item.arguments))
                elif item.type == "message":
                    texts += [c.text for c in item.content if getattr(c, "type", "") == "output_text"]
            return calls, "\n".join(texts)
        tools = [{"type": "function", "function": t} for t in TOOLS]
        choice = {"type": "function", "function": {"name": "submit"}} if final else "auto"
        response = self.llm.request(
            lambda: client.chat.completions.create(
                model=cfg.model,
                messages=self.items,
                tools=tools,
                tool_choice=choice,
                max_tokens=cfg.max_output_tokens,
                **self.llm.sampling(),
            )
        )
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        self._spend(
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            getattr(details, "cached_tokens", 0) or 0,
        )
        message = response.choices[0].message if response.choices else None
        if message is None:
            return [], ""
        calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
        entry: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
        if calls:
            entry["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls
            ]
        self.items.append(entry)
        return calls, message.content or ""

    def _spend(self, prompt: int, completion: int, cached: int = 0) -> None:
        """Count one request: its cached prompt tokens (where the endpoint reports them) at their price."""
        usage = self.llm.price(prompt or 0, completion or 0, cached)
        self.spent = self.spent + usage

    def _answer(self, call_id: str, output: str) -> None:
        if self.mode == RESPONSES:
            self.items.append({"type": "function_call_output", "call_id": call_id, "output": output})
        else:
            self.items.append({"role": "tool", "tool_call_id": call_id, "content": output})

    def _say(self, text: str) -> None:
        self.items.append({"role": "user", "content": text})

    def _plain_reply(self, text: str) -> None:
        """No tool call: a JSON proposal in the text is tried as one; anything else gets a nudge."""
        from agentgolf.agent.proposers.llm.proposer import parse_proposal

        try:
            proposal = parse_proposal(text)
        except ProposalError:
            self._say(NUDGE)
            return
        try:
            current = (self.tree / self.ctx.trainer).read_text()
            edits = set_edits(current, proposal.set, self.ctx.trainer_env, self.ctx.trainer) + proposal.edits
            changed = apply_edits(self.tree, edits)
        except ProposalError as exc:
            self._say(f"Your JSON proposal did not apply: {exc}\n{NUDGE}")
            return
        if problem := compile_problem(changed):
            self._say(f"Your JSON proposal applied, but {problem}.\n{NUDGE}")
            return
        self.bench.settings.update(proposal.set)
        described = proposal.model_dump(include={"title", "hypothesis", "category", "expected_effect"})
        verdict = self.bench.call("submit", json.dumps(described))
        if self.bench.submitted is None:
            self._say(f"{verdict}\n{NUDGE}")
