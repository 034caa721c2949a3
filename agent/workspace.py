"""A workspace: a git repository with an `.agentgolf/` folder holding config, ledger and run folders.

Commands find it from the current directory, like git. Everything agentgolf writes lives under
`.agentgolf/` (and the demo's `data/`), both excluded through `.git/info/exclude`, so the user's own
files and `.gitignore` are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, ValidationError

from agentgolf.agent.controller.executor import LocalConfig
from agentgolf.agent.controller.preflight import FailFastConfig
from agentgolf.agent.controller.scheduler import SchedulerConfig
from agentgolf.agent.judge.acceptance import AcceptanceConfig
from agentgolf.agent.judge.fidelity import FidelityConfig, Rung
from agentgolf.agent.proposers.briefing.digest import DigestConfig
from agentgolf.agent.proposers.command import CommandConfig
from agentgolf.agent.proposers.llm.proposer import LLMConfig
from agentgolf.agent.proposers.search.proposer import SearchConfig
from agentgolf.agent.tracking.config import TrackConfig
from agentgolf.baseline.data_check import DataCheckConfig
from agentgolf.challenge import TRAINER_FILE
from agentgolf.errors import AgentgolfError, first_line
from agentgolf.experiments.ledger import Ledger
from agentgolf.sandbox.budget import Budget
from agentgolf.sandbox.result import DataSpec
from agentgolf.sandbox.slurm import SlurmConfig

if TYPE_CHECKING:
    from agentgolf.baseline.dataset import DatasetInfo

STATE_DIR = ".agentgolf"
CONFIG_FILE = "config.json"
LEDGER_FILE = "ledger.db"


class DataConfig(BaseModel):
    """Where the shards and tokenizer are; relative paths are relative to the workspace root."""

    dataset_dir: Path = Path("data/datasets/fineweb10B_sp1024")
    tokenizer: Path = Path("data/tokenizers/fineweb_1024_bpe.model")
    vocab_size: int = 1024
    check: DataCheckConfig = Field(default_factory=DataCheckConfig)  # `data check` and the run's fast check


class WorkspaceConfig(BaseModel):
    """The one place for a workspace's settings, saved as `.agentgolf/config.json`."""

    trainer: str = TRAINER_FILE
    data: DataConfig = Field(default_factory=DataConfig)
    budget: Budget = Field(default_factory=Budget)
    trainer_env: dict[str, str] = Field(default_factory=dict, description="extra env for every experiment")
    seed: int = 1337
    gpus: list[int] | None = Field(None, description="GPU ids for experiments; None = CPU")
    proposer: str = "search"
    acceptance: AcceptanceConfig = Field(default_factory=AcceptanceConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    command: CommandConfig = Field(default_factory=CommandConfig)
    executor: Literal["local", "slurm"] = Field("local", description="where experiments run")
    local: LocalConfig = Field(default_factory=LocalConfig)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    digest: DigestConfig = Field(default_factory=DigestConfig)
    fail_fast: FailFastConfig = Field(default_factory=FailFastConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)  # `run --track`: TensorBoard, offline W&B


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.state = self.root / STATE_DIR
        self.config = load_config(self.state / CONFIG_FILE)

    @property
    def trainer_path(self) -> Path:
        return self.root / self.config.trainer

    def ledger(self) -> Ledger:
        return Ledger(self.state / LEDGER_FILE, create=True)

    def run_dir(self, exp_id: int) -> Path:
        return self.state / "runs" / str(exp_id)

    def worktree_dir(self, exp_id: int) -> Path:
        return self.state / "worktrees" / str(exp_id)

    def data_spec(self) -> DataSpec:
        data = self.config.data
        dataset_dir = self.resolve(data.dataset_dir)
        tokenizer = self.resolve(data.tokenizer)
        if not dataset_dir.is_dir():
            raise AgentgolfError(
                f"dataset folder {dataset_dir} does not exist: fetch or build data first (agentgolf data --help)"
            )
        if not tokenizer.is_file():
            raise AgentgolfError(
                f"tokenizer {tokenizer} does not exist (set data.tokenizer in {self.config_path})"
            )
        train = sorted(dataset_dir.glob("fineweb_train_*.bin"))
        val = sorted(dataset_dir.glob("fineweb_val_[0-9]*.bin"))  # not the byte sidecar fineweb_val_bytes_*
        if not train or not val:
            raise AgentgolfError(f"{dataset_dir} needs fineweb_train_*.bin and fineweb_val_*.bin shards")
        check_data(train + val, tokenizer, data.vocab_size)
        return DataSpec(train_files=train, val_files=val, tokenizer=tokenizer, vocab_size=data.vocab_size)

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.root / path

    @property
    def config_path(self) -> Path:
        return self.state / CONFIG_FILE

    def budget(self, train_seconds: float | None = None, size_bytes: int | None = None) -> Budget:
        """The workspace's budget with the command line's overrides applied."""
        changes = {
            k: v for k, v in (("train_seconds", train_seconds), ("size_bytes", size_bytes)) if v is not None
        }
        try:
            return Budget.model_validate({**self.config.budget.model_dump(), **changes})
        except ValueError as exc:
            raise AgentgolfError(f"invalid budget: {first_line(exc)}") from exc


def check_data(shards: list[Path], tokenizer: Path, vocab_size: int) -> None:
    """Bad data is the user's to fix, said in one line before any run: a truncated or foreign shard (header
    against file size, 1 KiB read each), a tokenizer that is not one or does not match vocab_size."""
    from agentgolf.baseline.shards import shard_token_count
    from agentgolf.baseline.tokenizer import load_tokenizer

    for shard in shards:
        shard_token_count(shard)
    pieces = load_tokenizer(tokenizer).vocab_size()
    if pieces > vocab_size:
        raise AgentgolfError(
            f"tokenizer {tokenizer} has {pieces} pieces but data.vocab_size is {vocab_size}: "
            "the model's output layer would be too small; set data.vocab_size to match"
        )


def load_config(path: Path) -> WorkspaceConfig:
    """The workspace's settings; every mistake in the file (unknown keys with their nearest valid name, then
    each invalid value) is said in one line, in plain words."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AgentgolfError(f"no workspace config at {path}") from exc
    except json.JSONDecodeError as exc:
        raise AgentgolfError(f"workspace config {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentgolfError(f"workspace config {path} is invalid: it must hold one JSON object {{...}}")
    problems = unknown_keys(data, WorkspaceConfig)
    try:
        config = WorkspaceConfig.model_validate(data)
    except ValidationError as exc:
        problems += [plain_error(e) for e in exc.errors()]
        config = None
    if problems:
        raise AgentgolfError(f"workspace config {path} is invalid: {'; '.join(problems)}")
    return config


def unknown_keys(data: dict, model: type[BaseModel], prefix: str = "") -> list[str]:
    """Keys the settings model does not have (pydantic would drop them silently), each with the nearest
    valid name: at its own level, else anywhere in the settings (`noise_seed`: `acceptance.noise_seeds`)."""
    import difflib

    found = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            near = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
            if not near:
                everywhere = _paths(WorkspaceConfig)
                leaf = difflib.get_close_matches(key, list(everywhere), n=1, cutoff=0.6)
                near = [everywhere[leaf[0]]] if leaf else []
            hint = f" (did you mean {near[0] if '.' in near[0] else prefix + near[0]}?)" if near else ""
            found.append(f"{prefix}{key}: unknown key{hint}")
        elif isinstance(value, dict) and (sub := _model_of(field.annotation)) is not None:
            found += unknown_keys(value, sub, f"{prefix}{key}.")
    return found


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The settings model a field holds (also through `X | None`), or None for plain values."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _paths(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Every setting's name -> its dotted path (the first one, where two models share a name)."""
    paths: dict[str, str] = {}
    for name, field in model.model_fields.items():
        paths.setdefault(name, prefix + name)
        if (sub := _model_of(field.annotation)) is not None:
            for leaf, path in _paths(sub, f"{prefix}{name}.").items():
                paths.setdefault(leaf, path)
    return paths


def plain_error(error: dict) -> str:
    """One pydantic error as `where: what is wrong (got value)`, without its type codes and links."""
    where = ".".join(str(part) for part in error["loc"]) or "the file"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {json.dumps(got)[:60]})"
    return f"{where}: {error['msg'].rstrip('.')}{shown}"


def save_config(path: Path, config: WorkspaceConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(config.model_dump_json(indent=2) + "\n")
    tmp.replace(path)


def find_workspace(start: Path | None = None) -> Workspace:
    """Walk up from `start` (default: the current directory) to the folder holding `.agentgolf/`."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / STATE_DIR / CONFIG_FILE).is_file():
            return Workspace(folder)
    raise AgentgolfError(f"not inside an agentgolf workspace ({here}); create one with `agentgolf init DIR`")


DEMO_DATASET = "demo_sp1024"
DEMO_CORPUS_BYTES = 3_000_000
DEMO_VAL_FRACTION = 0.03
# The CPU preset trains until the clock stops it, as the challenge's trainer does, so the number of steps
# (and the warmdown's timing) varies with the machine's load: the noise calibration measures that noise.
DEMO_TRAIN_SECONDS = 60
DEMO_BUDGET = Budget(
    train_seconds=DEMO_TRAIN_SECONDS, train_grace_seconds=60, score_seconds=180, memory_bytes=16 * 2**30
)
DEMO_ACCEPTANCE = AcceptanceConfig(noise_seeds=3, max_runs=2)  # at most 3 + 2 x 2 = 7 runs
DEMO_SLOTS = LocalConfig(cpu_slots=2)  # two experiments at once, a core each
DEMO_SCHEDULER = SchedulerConfig(morning_rounds=2)  # a promoted best re-measured twice: about 2 minutes more
# The fidelity ladder at demo scale: ideas are screened with a third of the training, winners then get it all.
DEMO_FIDELITY = FidelityConfig(screen=Rung(name="screen", train_seconds=DEMO_TRAIN_SECONDS / 3))


def init_workspace(root: Path, *, demo: bool = False, progress: bool = True) -> Workspace:
    """Create (or adopt) a git repository as a workspace: baseline trainer, config, ledger, demo data."""

    from agentgolf.experiments.worktree import AUTHOR, repo_here

    root = root.resolve()
    if (root / STATE_DIR / CONFIG_FILE).exists():
        raise AgentgolfError(f"{root} is already an agentgolf workspace")
    if root.exists() and not root.is_dir():
        raise AgentgolfError(f"{root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    repo = repo_here(root)
    exclude = Path(repo.git_dir) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    ignored = exclude.read_text() if exclude.exists() else ""
    for pattern in (f"/{STATE_DIR}/", "/data/", "__pycache__/", "*.pyc"):
        if pattern not in ignored.split():
            ignored += ("" if ignored.endswith("\n") or not ignored else "\n") + pattern + "\n"
    exclude.write_text(ignored)

    trainer = root / TRAINER_FILE
    if not trainer.exists():
        trainer.write_bytes(baseline_trainer_source())
        repo.index.add([TRAINER_FILE])
        repo.index.commit("agentgolf: baseline trainer\n", author=AUTHOR, committer=AUTHOR)

    config = WorkspaceConfig(gpus=visible_gpus())
    if demo:
        info = build_demo_dataset(root / "data", progress=progress)
        config = WorkspaceConfig(
            data=DataConfig(
                dataset_dir=info.dataset_dir.relative_to(root),
                tokenizer=info.tokenizer.relative_to(root),
                vocab_size=info.vocab_size,
            ),
            budget=DEMO_BUDGET,
            trainer_env={"PRESET": "cpu"},
            # The product's own rule, scaled to a short demo: different seeds train differently on the CPU
            # too, so the baseline's seeds measure real noise; fewer seeds and re-runs than on GPUs.
            acceptance=DEMO_ACCEPTANCE,
            local=DEMO_SLOTS,
            scheduler=DEMO_SCHEDULER,
            fidelity=DEMO_FIDELITY,
        )
    save_config(root / STATE_DIR / CONFIG_FILE, config)
    ws = Workspace(root)
    ws.ledger().close()
    return ws


def build_demo_dataset(
    root: Path,
    *,
    max_bytes: int = DEMO_CORPUS_BYTES,
    vocab_size: int = 1024,
    byte_fallback: bool = True,
    progress: bool = False,
) -> DatasetInfo:
    """The demo dataset: stdlib sources train as they are; the held-out first DEMO_VAL_FRACTION of them
    validate disguised with a fresh secret seed (`disguise_docs`), since the sandbox can read the stdlib."""
    from agentgolf.baseline.corpus import demo_corpus, disguise_docs
    from agentgolf.baseline.dataset import build_dataset

    docs = demo_corpus(max_bytes)
    n_val = max(1, round(DEMO_VAL_FRACTION * len(docs)))
    train = docs[n_val:]
    return build_dataset(
        train,
        root,
        name=DEMO_DATASET,
        vocab_size=vocab_size,
        val_docs_iter=disguise_docs(docs[:n_val], train),
        progress=progress,
        byte_fallback=byte_fallback,
    )


def visible_gpus() -> list[int] | None:
    """Every CUDA device this machine shows, so a new workspace on a GPU node uses them; None on CPU."""
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else None


def baseline_trainer_source() -> bytes:
    from importlib.resources import files

    return files("agentgolf.baseline").joinpath(TRAINER_FILE).read_bytes()
