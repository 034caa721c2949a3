"""Print the import graph between agentgolf's modules, and check that data flows one way.

    python bench/import_graph.py            # the graph: each module and the agentgolf modules it imports
    python bench/import_graph.py --check    # only the edges against the flow; exit 1 if there are any
    python bench/import_graph.py --json     # the graph as {module: [imports]}

The layers, lowest first: the package root (`agentgolf/`: errors, the challenge's numbers), `baseline/`'s
data tools, `sandbox/`, `experiments/`, `prompts/`, `agent/`. A module may import its own layer and the
layers below it, never above. On top of that: the sandbox takes only the shard format from `baseline/`
(never the folder's other tools), and `baseline/train_gpt.py`, the file the agent patches, imports nothing
from agentgolf. Imports under `if TYPE_CHECKING:` are for type checkers only and are not edges.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "agentgolf": "agentgolf",
    "baseline": "baseline",
    "sandbox": "sandbox",
    "experiments": "experiments",
    "prompts": "prompts",
    "agent": "agent",
}  # layer name -> folder, lowest layer first
LAYERS = list(FOLDERS)
STANDALONE = {"agentgolf.baseline.train_gpt"}  # imports nothing from agentgolf
SANDBOX_MAY_USE_FROM_BASELINE = {"agentgolf.baseline.shards"}


def module_name(folder: str, path: Path, root: Path) -> str:
    rel = path.relative_to(root / FOLDERS[folder]).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    prefix = "agentgolf" if folder == "agentgolf" else f"agentgolf.{folder}"
    return ".".join([prefix, *parts])


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS and parts[1] != "agentgolf" else "agentgolf"


def _runtime_imports(tree: ast.AST) -> list[str | tuple[str, str]]:
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` names the module; `from mod import name` names mod itself
            found.extend((f"{node.module}.{alias.name}", node.module) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph(root: Path = ROOT) -> dict[str, list[str]]:
    """Each module and the agentgolf modules (files) it imports at run time."""
    files = {
        module_name(layer, path, root): path
        for layer, folder in FOLDERS.items()
        for path in sorted((root / folder).rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    edges = {}
    for module, path in files.items():
        targets = set()
        for name in _runtime_imports(ast.parse(path.read_text(), str(path))):
            first = name if isinstance(name, str) else (name[0] if name[0] in files else name[1])
            if first in files and first != module:
                targets.add(first)
        edges[module] = sorted(targets)
    return edges


def violations(edges: dict[str, list[str]]) -> list[str]:
    bad = []
    for module, targets in edges.items():
        src = layer_of(module)
        for target in targets:
            dst = layer_of(target)
            if module in STANDALONE:
                bad.append(f"{module} -> {target}: the trainer must stand alone")
            elif LAYERS.index(dst) > LAYERS.index(src):
                bad.append(f"{module} -> {target}: {src}/ may not import from {dst}/ (data flows one way)")
            elif src == "sandbox" and dst == "baseline" and target not in SANDBOX_MAY_USE_FROM_BASELINE:
                bad.append(f"{module} -> {target}: the harness takes only the shard format from baseline/")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print only violations; exit 1 if any")
    parser.add_argument("--json", action="store_true", help="print the graph as JSON")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository to read (default: this one)")
    args = parser.parse_args(argv)
    edges = graph(args.root.resolve())
    bad = violations(edges)
    if args.json:
        print(json.dumps(edges, indent=2))
    elif not args.check:
        width = max(len(m) for m in edges)
        for module, targets in edges.items():
            short = ", ".join(t.removeprefix("agentgolf.") for t in targets) or "-"
            print(f"{module.removeprefix('agentgolf.'):<{width - 10}}  -> {short}")
        print(f"\n{len(edges)} modules, {sum(map(len, edges.values()))} edges, {len(bad)} against the flow")
    for line in bad:
        print(f"AGAINST THE FLOW: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
