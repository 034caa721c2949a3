"""Prompt rendering beside the templates, so that every proposer (LLM or CLI agent) says the same thing.

The templates are plain Markdown with `{name}` fields; this module fills them. It imports nothing from
the agent at run time: a proposer passes its context in, and the prompt is only text.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentgolf.agent.proposers.proposal import ProposalContext


def template(name: str) -> str:
    return files("agentgolf.prompts").joinpath(f"{name}.md").read_text()


def render(name: str, **fields: object) -> str:
    return template(name).format(**fields)


NO_DATA = "The data is not described (no dataset manifest was given to this proposal)."


def system_text(ctx: ProposalContext) -> str:
    """The rules of the game and the data: the same for every proposal of a run, so the stable prefix of
    every request an endpoint may cache."""
    return render(
        "system",
        size_limit=ctx.budget.size_bytes,
        train_seconds=ctx.budget.train_seconds,
        data=ctx.data or NO_DATA,
    )


def source_block(ctx: ProposalContext) -> str:
    """The trainer as the prompt shows it: whole, or past `outline_over_lines` lines an outline to view."""
    lines = ctx.source.count("\n") + 1
    if ctx.outline_over_lines and lines > ctx.outline_over_lines:
        from agentgolf.prompts.outline import outline

        return "```text\n" + outline(ctx.source, ctx.trainer) + "\n```"
    return f"```python\n{ctx.source}\n```"


def proposal_messages(ctx: ProposalContext, tools: bool = False, max_turns: int = 0) -> list[dict[str, str]]:
    """The chat messages that ask for one change to the parent's trainer: as one JSON reply, or (`tools`)
    as a session of tool calls that ends with `submit`. The trainer comes first after the system prompt,
    the parts that change between proposals after it: the longest common prefix for a prefix cache."""
    reply = render("reply_tools", max_turns=max_turns) if tools else render("reply_json")
    system = f"{system_text(ctx)}\n{reply}"
    parent_bpb = f"{ctx.parent.val_bpb:.4f}" if ctx.parent.val_bpb is not None else "unknown"
    user = render(
        "propose",
        digest=ctx.digest,
        facts=_section("The parent's run (what its training did, and the settings in force)", ctx.facts),
        in_flight=_section("What else is in flight", ctx.in_flight),
        trainer=ctx.trainer,
        code_bytes=len(ctx.source.encode()),
        code_lines=ctx.source.count("\n") + 1,
        parent_id=ctx.parent.id,
        parent_bpb=parent_bpb,
        source=source_block(ctx),
        rules=_section(
            "How your change will be measured (the rules of this run, with its numbers)", ctx.rules
        ),
        techniques=_section(
            "Known techniques (the leaderboard's, each a tested patch; with its outcome in this workspace)",
            ctx.techniques,
        ),
        notebook=_section("Your lab notebook (what earlier sessions of this run noted)", ctx.notebook),
        notes=_section("Notes from the person running this search (follow them)", ctx.notes),
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _section(title: str, body: str) -> str:
    """An optional part of a prompt: nothing at all when there is nothing to say."""
    return f"\n# {title}\n\n{body.strip()}\n" if body.strip() else ""


def proposal_prompt(ctx: ProposalContext) -> str:
    """The same request as one text, for a CLI coding agent that edits files itself."""
    request = proposal_messages(ctx)[1]["content"]
    return f"{system_text(ctx)}\n{request}\n\n" + template("cli_agent").strip()
