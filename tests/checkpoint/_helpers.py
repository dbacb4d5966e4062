"""Forging checkpoint files (valid checksum, arbitrary content) and comparing trees."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import funcnet
from funcnet.checkpoint import fileformat

ROOT = Path(funcnet.__file__).resolve().parents[1]


def write_raw(path, description, leaves, **header):
    """A checkpoint whose header and leaves are exactly these, with a correct SHA-256:
    what a forger (or a buggy writer) could produce, so only the checks after the
    checksum can refuse it."""
    fields = {"format": fileformat.FORMAT, "version": fileformat.VERSION, "step": None,
              "num_leaves": len(leaves), "tree": description}
    fields.update(header)
    raw = json.dumps(fields).encode()
    leaves = [np.asarray(x) for x in leaves]
    np.savez(path, tree=np.frombuffer(raw, np.uint8),
             **{f"leaf_{i}": x for i, x in enumerate(leaves)},
             sha256=fileformat._digest(raw, leaves))


def members(path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def rewrite_header(path, **changes):
    """Edits header fields in place (the checksum is left stale)."""
    found = members(path)
    header = json.loads(found["tree"].tobytes())
    header.update(changes)
    found["tree"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **found)


def to_numpy(x):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def same(a, b) -> bool:
    """Same structure, and every leaf with the same dtype, shape and bytes."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b) or len(la) != len(lb):
        return False
    return all(to_numpy(x).dtype == to_numpy(y).dtype and to_numpy(x).shape == to_numpy(y).shape
               and to_numpy(x).tobytes() == to_numpy(y).tobytes() for x, y in zip(la, lb))


def popen(code: str, *args, **kwargs) -> subprocess.Popen:
    """``python -c code *args`` importing this checkout's funcnet."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)
