"""Checkpoints: weights as safetensors plus optimiser / scheduler / RNG / loop state.

Each checkpoint is a pair of files written atomically, then published by atomically
replacing ``checkpoints/latest.json``; older pairs are deleted only after that. A crash at
any instant therefore leaves a complete, loadable checkpoint. The state file holds only
tensors and plain Python values and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from nclab.atomic import atomic_write_bytes, atomic_write_json
from nclab.errors import NclabError

CKPT = "checkpoints"


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's RNG state: the CPU generator, and the CUDA one of ``device`` if any."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_weights(path: Path, module: torch.nn.Module) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, save(tensors))


def load_weights(path: Path, module: torch.nn.Module) -> None:
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise NclabError(f"{path}: not a readable safetensors weights file ({e})") from None
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise NclabError(f"{path}: weights do not fit the run's model ({first})") from None


def save_checkpoint(run_dir: Path, module: torch.nn.Module, state: dict) -> None:
    """Write weights + state for global step ``state['global_step']`` and publish it."""
    folder = Path(run_dir) / CKPT
    folder.mkdir(exist_ok=True)
    step = int(state["global_step"])
    w, s = folder / f"step-{step:08d}.safetensors", folder / f"step-{step:08d}.state.pt"
    save_weights(w, module)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(s, buf.getvalue())
    atomic_write_json(folder / "latest.json", {"global_step": step, "weights": w.name, "state": s.name})
    for old in folder.glob("step-*"):
        if old.name not in (w.name, s.name):
            old.unlink(missing_ok=True)


_NAMES = re.compile(r"^step-\d{8}\.(safetensors|state\.pt)$")
STATE_KEYS = {"optimizer": dict, "scheduler": dict, "rng": list, "epoch": int, "step": int, "global_step": int,
              "seconds": float, "sums": dict, "records": int}


def latest_checkpoint(run_dir: Path) -> tuple[Path, Path] | None:
    """(weights, state) of the checkpoint ``checkpoints/latest.json`` names, or None without one."""
    pointer = Path(run_dir) / CKPT / "latest.json"
    if not pointer.exists():
        return None
    try:
        meta = json.loads(pointer.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise NclabError(f"{pointer}: corrupt checkpoint pointer, not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) and _NAMES.match(meta[k])
                                             for k in ("weights", "state")):
        raise NclabError(f"{pointer}: corrupt checkpoint pointer; expected {{\"weights\": \"step-NNNNNNNN.safetensors\", "
                         f"\"state\": \"step-NNNNNNNN.state.pt\"}}")
    files = pointer.parent / meta["weights"], pointer.parent / meta["state"]
    for f in files:
        if not f.is_file():
            raise NclabError(f"{pointer}: names {f.name}, which is missing from {pointer.parent}")
    return files


def load_state(path: Path, map_location="cpu") -> dict:
    """The loop state of a checkpoint, read with ``weights_only=True`` (tensors and plain values
    only; anything else is refused, never unpickled) and checked key by key."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:           # torch's refusal: damaged, or objects that would need unpickling
        raise NclabError(f"{path}: refused as a checkpoint state: damaged, or it holds objects other than "
                         f"tensors and plain values (never unpickled)") from None
    except Exception as e:
        raise NclabError(f"{path}: not a readable checkpoint state ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise NclabError(f"{path}: expected a checkpoint state dictionary, got {type(state).__name__}")
    for key, kind in STATE_KEYS.items():
        v = state.get(key)
        if not isinstance(v, kind) or isinstance(v, bool) or (kind is int and v < 0):
            raise NclabError(f"{path}: checkpoint state key {key!r} is missing or not {kind.__name__}")
    return state
