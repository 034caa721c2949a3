"""An import blocker: with this folder on PYTHONPATH, the top-level packages named in $AGENTGOLF_BLOCK_IMPORTS
(comma- or space-separated) cannot be imported, as on a machine that lacks them (the GPU image: see
bench/gpu_data.py's IMAGE_LACKS). Python imports `sitecustomize` at start-up, from the first folder on its path
that has one; this one then hands over to the next, if any (Debian's, for example).

Used by tests/test_lazy_imports.py and by `bench/gpu_check.sh --dry-run`."""

import importlib.abc
import importlib.util
import os
import sys

_BLOCKED = frozenset(n for n in os.environ.get("AGENTGOLF_BLOCK_IMPORTS", "").replace(",", " ").split() if n)


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(
                f"No module named '{fullname}' (blocked: not on the GPU image)", name=fullname
            )
        return None


if _BLOCKED:
    sys.meta_path.insert(0, _Blocker())


def _chain() -> None:
    """Run the next sitecustomize on the path, so that blocking takes nothing else away."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in sys.path:
        if not folder or os.path.abspath(folder) == here:
            continue
        candidate = os.path.join(folder, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_next_sitecustomize", candidate)
            if spec and spec.loader:
                try:
                    spec.loader.exec_module(importlib.util.module_from_spec(spec))
                except Exception:  # noqa: BLE001 - a broken site hook must not stop the interpreter
                    pass
            return


_chain()
