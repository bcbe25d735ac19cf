"""What produced a set of results: config hash, package versions, git commit, hardware, seed; and the
hash of the code a workflow stage runs, so that editing that code reruns the stage."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from lcopt.workflow import CPU_KERNELS

PACKAGES = ("lcopt", "torch", "transformers", "tokenizers", "datasets", "snakemake", "polars", "rouge", "rouge-score")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """The commit lcopt's code is at and whether its checkout has uncommitted changes (None outside git)."""
    status = _git("status", "--porcelain")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder that holds lcopt/


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):  # e.g. an attribute of a module, not a submodule
        return False


def _module_file(name: str) -> Path:
    """The source file of a module name (one already imported, e.g. a user's technique file, or one
    importable) or of a path to a .py file."""
    if name.endswith(".py"):
        return Path(name).resolve()
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module else None
    if origin is None:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
    if not origin or not origin.endswith(".py"):
        raise ValueError(f"{name}: no Python source file to hash")
    return Path(origin).resolve()


def _is_lcopt(name: str | None) -> bool:
    return bool(name) and (name == "lcopt" or name.startswith("lcopt."))


def _runtime_nodes(tree: ast.AST):
    """Every node of a module but those under `if TYPE_CHECKING:` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imported_lcopt_modules(path: Path) -> set[str]:
    """The lcopt modules a source file imports anywhere in it (function-level imports included): for
    `from lcopt.x import y`, `lcopt.x.y` when that is a module, else `lcopt.x`."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if _is_lcopt(a.name)}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_lcopt(node.module):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if _is_module(sub) else node.module)
    return names


def code_files(*roots: str) -> list[Path]:
    """The files of `roots` (module names, or paths of .py files such as a rule's script) and of every
    lcopt module they import, followed through the modules' own imports. A package is only its
    `__init__.py`: the modules of `lcopt.techniques` that a job runs are roots of their own."""
    seen: dict[Path, None] = {}
    queue = [_module_file(root) for root in roots]
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen[path] = None
        queue += [_module_file(name) for name in _imported_lcopt_modules(path)]
    return sorted(seen)


@functools.cache
def code_sha256(*roots: str) -> str:
    """One hash of `code_files(*roots)` (their contents and names relative to the package root, so a
    moved checkout hashes alike): a rule's param, so that editing code a stage runs reruns the stage."""
    digest = hashlib.sha256()
    for path in code_files(*roots):
        label = path.relative_to(PACKAGE_ROOT) if path.is_relative_to(PACKAGE_ROOT) else Path(path.name)
        digest.update(f"{label.as_posix()}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def gpus() -> list[dict] | str:
    """Model, memory and driver of each GPU through NVML (nvidia-ml-py); "none" without an NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVIDIA driver (or no nvidia-ml-py) here: a CPU run
        return "none"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append(
                {
                    "index": i,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "memory_bytes": pynvml.nvmlDeviceGetMemoryInfo(handle).total,
                    "driver": driver,
                }
            )
        return out or "none"
    finally:
        pynvml.nvmlShutdown()


def cpu() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; else what `platform` knows): a CPU run's numbers can
    depend on the CPU's vector paths (`lcopt.workflow.CPU_KERNELS`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_cuda() -> str | None:
    import torch

    return torch.version.cuda


def collect(config: dict) -> dict:
    """The provenance record written beside the tables (`provenance.json`)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "config_sha256": config_hash(config),
        "seed": config.get("seed"),
        **git_state(),
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu(),
        "cpu_kernels": {name: os.environ.get(name) for name in CPU_KERNELS},
        "gpus": gpus(),
        "torch_cuda": _torch_cuda(),
        "config": config,
    }
