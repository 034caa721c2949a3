"""How large a proposal session's requests are: characters and estimated tokens (4 characters a token) for
the demo trainer and for a 3,000-line trainer: before (the whole source, after the digest) and after (the trainer first,
as an outline past `DigestConfig.outline_over_lines`). "before" is measured with today's sections (rules,
techniques), so it isolates the outline and the order; and how much of each request is the stable prefix
(system prompt and trainer) that an endpoint with a prefix cache bills at its cached price.

    python bench/prompt_size.py [--turns 12]

A session resends its whole conversation on every turn, so a session's input is about `turns` times the
first request (plus the tool results, left out here: they depend on the model).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

from agentgolf.agent.proposers.briefing.digest import DigestConfig, build_digest
from agentgolf.agent.proposers.proposal import ProposalContext
from agentgolf.agent.proposers.techniques import catalogue_with_outcomes
from agentgolf.experiments.ledger import Experiment
from agentgolf.prompts.render import proposal_messages
from agentgolf.sandbox.budget import Budget

CHARS_PER_TOKEN = 4


def big_trainer(source: str, lines: int) -> str:
    """The baseline grown to `lines` lines with renamed copies of its functions: a leaderboard-sized file."""
    body = [source]
    copy = 0
    while sum(part.count("\n") for part in body) < lines:
        copy += 1
        body.append(source.split("class Hyperparameters")[0].replace("def ", f"def v{copy}_"))
    return "\n".join(body)


def context(source: str, outline_over: int) -> ProposalContext:
    parent = Experiment(
        id=1, kind="baseline", status="ok", title="Baseline", val_bpb=2.5, created_at=time.time()
    )
    return ProposalContext(
        source=source,
        trainer="train_gpt.py",
        parent=parent,
        history=[parent],
        digest=build_digest([parent], parent),
        trainer_env={},
        budget=Budget(),
        techniques=catalogue_with_outcomes([parent]),
        outline_over_lines=outline_over,
    )


def measure(source: str, outline_over: int, before: bool) -> tuple[int, int]:
    """(characters of the first request, characters of its stable prefix). After: the system prompt and the
    trainer block come first (the techniques follow them). Before, the digest came first: the system only."""
    ctx = context(source, outline_over)
    system, user = (m["content"] for m in proposal_messages(ctx, tools=True, max_turns=12))
    stable = len(system) if before else len(system) + user.index("\n# Known techniques")
    return len(system) + len(user), stable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=12)
    args = parser.parse_args()
    demo = resources.files("agentgolf.baseline").joinpath("train_gpt.py").read_text()
    cases = {"demo trainer": demo, "3,000-line trainer": big_trainer(demo, 3_000)}
    limit = DigestConfig().outline_over_lines
    print(
        f"{'trainer':<20} {'lines':>6} {'prompt':<7} {'chars':>9} {'~tokens':>8} {'stable':>6} {'session':>10}"
    )
    for name, source in cases.items():
        for label, over, before in (("before", 0, True), ("after", limit, False)):
            chars, stable = measure(source, over, before)
            tokens = chars // CHARS_PER_TOKEN
            print(
                f"{name:<20} {source.count(chr(10)) + 1:>6} {label:<7} {chars:>9,} {tokens:>8,} "
                f"{stable / chars:>6.0%} {tokens * args.turns:>10,}"
            )


if __name__ == "__main__":
    main()
