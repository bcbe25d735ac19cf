"""Carry a quantized checkpoint to another machine as what differs from its parent (the device tool
moves at most 64 MiB a call; SmolLM2's 4-bit checkpoints are 115 MB, half of it the bf16 embedding
that the parent already holds in float32).

  split PARENT_DIR CHILD_FILE DELTA_FILE: CHILD_FILE's tensors that are not its parent's cast to their
      dtype, plus the names of those that are and a sha256 over all of the child's tensors;
  join PARENT_DIR DELTA_FILE CHILD_FILE: the child's tensors again, checked against that sha256 (the
      file's bytes may differ: safetensors orders its header its own way).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def parent_tensors(parent_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(parent_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


def split(parent_dir: Path, child: Path, delta: Path) -> None:
    parent = parent_tensors(parent_dir)
    with safe_open(child, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    same = {k: str(v.dtype) for k, v in tensors.items() if k in parent and torch.equal(parent[k].to(v.dtype), v)}
    kept = {k: v for k, v in tensors.items() if k not in same}
    record = {"from_parent": same, "child_metadata": meta, "child_sha256": digest(tensors)}
    save_file(kept, delta, metadata={"checkpoint_delta": json.dumps(record)})
    print(f"{child}: {len(kept)} tensors kept, {len(same)} from the parent -> {delta} ({delta.stat().st_size} bytes)")


def join(parent_dir: Path, delta: Path, child: Path) -> None:
    with safe_open(delta, "pt") as f:
        record = json.loads(f.metadata()["checkpoint_delta"])
    tensors = load_file(delta)
    parent = parent_tensors(parent_dir)
    for name, dtype in record["from_parent"].items():
        tensors[name] = parent[name].to(getattr(torch, dtype.removeprefix("torch.")))
    got = digest(tensors)
    if got != record["child_sha256"]:
        raise SystemExit(f"{delta}: the rebuilt tensors' sha256 {got} is not the original's {record['child_sha256']}")
    save_file(tensors, child, metadata=record["child_metadata"])
    print(f"{child}: rebuilt, its tensors' sha256 {got} as the original's")


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    {"split": split, "join": join}[command](*map(Path, paths))
