"""The resumable state of a training run, written atomically next to FuxiCTR's checkpoint.

``<model_root>/<dataset_id>/<expid>.model`` stays FuxiCTR's best-model file (a plain
``state_dict``). Beside it, ``<expid>.model.state`` holds what a killed run needs to go on
exactly where it stopped: the model and optimizer (with any learning rate decayed on a
plateau), the early-stopping record, the epoch, the position in the epoch's shuffled order
(the RNG states the epoch's order was drawn from, and the number of batches done), the
running training loss, and the CPU / CUDA / numpy / Python RNG states of that moment.
Every write goes to a temporary sibling, is flushed to disk and renamed over the old file,
so a kill at any instant leaves either the old state or the new one, never half of one.
"""
import hashlib
import json
import os
import random

import numpy as np
import torch

from .atomic import atomic_write
from .errors import UserError

FORMAT = 2  # 2: the epoch's order is kept as all RNG states (H5 block loaders shuffle with numpy)
# Keys that do not change what a run computes: a state written under other values still applies.
VOLATILE_KEYS = {"gpu", "verbose", "num_workers", "epochs", "model_root", "checkpoint_steps", "nonfinite"}


def state_path(checkpoint):
    return checkpoint + ".state"


def config_digest(params):
    """A digest of the settings a state belongs to (data paths, model and training keys)."""
    content = {k: v for k, v in params.items() if not k.startswith("_") and k not in VOLATILE_KEYS}
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_states():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states):
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def atomic_save(obj, path, what="file"):
    """``torch.save`` through a temporary sibling, fsync and rename; one clear error on failure."""
    try:
        with atomic_write(path, mode="wb", durable=True) as f:
            torch.save(obj, f)
    except OSError as exc:
        raise UserError(f"{path}: cannot write the {what} ({exc.strerror or exc})") from None


def load(path, what="checkpoint", hint="delete it or retrain"):
    """``torch.load`` on the CPU, with one clear error for a missing, truncated or corrupt file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no {what} there") from None
    except Exception as exc:  # truncated zip, pickle errors, wrong format: all one message
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: unreadable {what} ({reason}); {hint}") from None


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
