"""What identifies a run of ``fit``, and resuming one from a checkpoint directory.

A run's *fingerprint* is stored in the metadata (JSON header) of every checkpoint ``fit``
writes, together with the history of every epoch since the start. It holds what decides
the trajectory of the parameters, and only that:

- the model (its layers' names, e.g. ``serial[Dense(32), ReLU, Dense(10)]``), the tree
  structure, shapes and dtypes of ``params``, ``state`` and ``opt_state``, the learning
  rate the first update uses (when :func:`funcnet.optim.current_learning_rate` knows it);
- the optimizer and the model as built: for what funcnet built, the call that built it
  with every setting (:func:`funcnet.optim.describe`, :func:`funcnet.nn.describe`, e.g.
  ``adam(learning_rate=0.001, b1=0.9, ...)``, ``MultiHeadAttention(num_heads=4, ...,
  rope=True)``), so ``adam`` and ``adamax`` (the same state tree), two values of ``b2``,
  or a model with and without rotary embeddings never share a directory; a checkpoint
  written before funcnet recorded them is resumed without these two checks;
- the loss function's qualified name, the PRNG key, the batch size, the training data's
  shapes and dtypes (not its values: hashing a large data set on every call would cost
  more than it protects). For a :class:`funcnet.data.Loader` also its batch size, order
  key, ``drop_last`` and transform's name; any other iterable of batches is recorded as
  ``"iterable"`` (it cannot be read without being consumed).

The user's ``config`` (``fit(config=...)``, JSON) joins it: what defines the run that fit
cannot see, such as an optax optimizer's hyperparameters (closures, which
:func:`~funcnet.optim.describe` cannot read) or augmentation
settings. A mismatch of params, state or optimizer state names the first leaf that
differs (``"leaves"``, the readable form of those three hashes). A tree holding typed PRNG
keys also matches a checkpoint whose tree held their raw ``uint32`` key data
(``"raw_keys"``; ``noisy_sgd``'s state did before it kept a typed key), which restore wraps.

Not in it, so that they can change between a run and its resumption: ``epochs`` (extend
a finished run), ``eval_data``, ``callbacks``, ``metrics_fn``, ``progress``,
``checkpoint_every``, ``scan``, ``compute_dtype`` and ``mesh`` (resume an 8-core run on one
GPU). A directory whose checkpoints carry another fingerprint (or none) is never resumed
from nor written into: ``fit`` raises :class:`RunMismatchError` unless
``overwrite=True``, which deletes them first.
"""
from __future__ import annotations

import functools
import hashlib
import math

import jax
import numpy as np

from funcnet._checks import is_key
from funcnet._describe import describe_value
from funcnet.data.batching import Loader
from funcnet.train.errors import RunMismatchError

__all__ = ["META_KEY", "fingerprint", "restore_template", "resume_point", "save_metadata",
           "stable_name"]

META_KEY = "funcnet.fit"
_RECORDED_LATER = ("optimizer", "model_config")
_EXPLANATIONS = ("leaves", "raw_keys")      # fingerprint entries that are never compared


def describe_model(layer) -> str:
    """``name[sub, ...]`` of a Layer tree, stable across processes."""
    name = getattr(layer, "name", type(layer).__name__)
    subs = getattr(layer, "layers", ()) or ()
    return name if not subs else f"{name}[{', '.join(describe_model(s) for s in subs)}]"


def stable_name(f) -> str:
    """A name of a function that is the same in every process (no memory addresses): its
    qualified name; a ``functools.partial`` with its arguments by value (a NumPy or JAX
    scalar too, so a loss with another ``label_smoothing`` is another run), as
    :func:`funcnet._describe.describe_value` writes them."""
    return describe_value(f)


def tree_signature(tree) -> str:
    """16 hex digits of SHA-256 over the tree structure, leaf shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    text = str(treedef) + "|" + ";".join(
        f"{_dtype_name(a)}{tuple(np.shape(a))}" for a in leaves)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _raw_keys(tree):
    """``tree`` with each typed key leaf as its ``uint32`` key data (shapes only): the
    tree a run whose state held raw keys (``noisy_sgd`` before it kept a typed key)
    recorded in its fingerprint."""
    return jax.tree_util.tree_map(
        lambda a: jax.eval_shape(jax.random.key_data, a) if is_key(a) else a, tree)


def _dtype_name(a) -> str:
    """The dtype JAX computes array ``a`` in (a NumPy float64 leaf is float32 when x64 is
    off); of a typed key, its key dtype; of a Python scalar leaf, NumPy's name for its
    type."""
    if is_key(a):
        return str(a.dtype)
    if not hasattr(a, "dtype"):
        return np.dtype(type(a)).name
    return jax.dtypes.canonicalize_dtype(np.dtype(a.dtype)).name


def key_hex(key) -> str:
    data = jax.random.key_data(key) if is_key(key) else key
    return ("typed:" if is_key(key) else "") + np.asarray(data).tobytes().hex()


def _describe_arrays(x, y) -> str:
    """``x[path] dtype[shape]`` of every leaf of ``x`` (a pytree of arrays) and ``y``."""
    return " ".join(f"{n}{jax.tree_util.keystr(path)} {np.dtype(a.dtype).name}"
                    f"{list(a.shape)}" for n, tree in zip("xy", (x, y))
                    for path, a in jax.tree_util.tree_flatten_with_path(tree)[0])


def describe_data(data) -> str:
    """The fingerprint's ``data``: of ``(x, y)`` arrays, of a :class:`funcnet.data.Loader`
    (its arrays, batch size, order key, ``drop_last``, transform), else ``"iterable"``."""
    if isinstance(data, tuple):
        return _describe_arrays(*data)
    if isinstance(data, Loader):
        order = "in order" if data.key is None else f"key {key_hex(data.key)}"
        transform = "" if data.transform is None else \
            f", transform {stable_name(data.transform)}"
        return (f"Loader({_describe_arrays(data.x, data.y)}, batch_size {data.batch_size}, "
                f"{order}, drop_last {data.drop_last}{transform})")
    return "iterable"


def describe_leaves(tree) -> list[str]:
    """``"path dtype[shape]"`` of every leaf: what :func:`tree_signature` hashes, kept
    readable so that a mismatch can name the first leaf that differs."""
    return [f"{jax.tree_util.keystr(path) or '(root)'} {_dtype_name(a)}{list(np.shape(a))}"
            for path, a in jax.tree_util.tree_flatten_with_path(tree)[0]]


_TREES = ("params", "state", "opt_state")


def fingerprint(*, model, params, state, opt_state, learning_rate, loss_fn, key,
                batch_size, data, config=None, optimizer: str | None = None,
                model_config: str | None = None) -> dict:
    """The run's fingerprint (JSON-serialisable; see the module docstring). ``data``:
    ``(x, y)`` or the source of batches (:func:`describe_data`); ``config``: the user's
    JSON-serialisable description of the rest of the run (``fit(config=...)``);
    ``optimizer`` / ``model_config``: :func:`funcnet.optim.describe` of the optimizer and
    :func:`funcnet.nn.describe` of the model (``None`` for what funcnet did not build).
    Its ``"leaves"`` entry explains a tree mismatch and is not compared itself; nor is
    ``"raw_keys"``, present when a tree holds typed PRNG keys: the signature the tree had
    with raw ``uint32`` keys, which a checkpoint written then still matches."""
    trees = dict(zip(_TREES, (params, state, opt_state)))
    fp = {
        "model": describe_model(model),
        **{name: tree_signature(tree) for name, tree in trees.items()},
        "learning_rate": None if learning_rate is None else float(learning_rate),
        "loss_fn": stable_name(loss_fn),
        "key": key_hex(key),
        "batch_size": batch_size,
        "data": describe_data(data),
        "leaves": {name: describe_leaves(tree) for name, tree in trees.items()},
    }
    raw = {name: tree_signature(_raw_keys(tree)) for name, tree in trees.items()
           if any(is_key(a) for a in jax.tree_util.tree_leaves(tree))}
    if raw:
        fp["raw_keys"] = raw
    if config is not None:
        fp["config"] = config
    fp["optimizer"] = optimizer
    fp["model_config"] = model_config
    return fp


def _where(manager) -> str:
    directory = getattr(manager, "directory", None)
    return f"the checkpoint directory {str(directory)!r}" if directory is not None else \
        f"the checkpoint manager {manager!r}"


def _shown(now, saved) -> tuple[str, str]:
    """``repr`` of two differing fingerprint values, where a float that is exactly a
    float32 (a float32 learning rate) reads in its shortest float32 form: ``0.003``, not
    ``0.003000000026077032``. Two values that would then read alike (the float64 and the
    float32 ``0.01``) keep their full ``repr``."""
    def show(v):
        exact32 = isinstance(v, float) and math.isfinite(v) and float(np.float32(v)) == v
        return str(np.float32(v)) if exact32 else repr(v)
    shown = show(now), show(saved)
    return shown if shown[0] != shown[1] else (repr(now), repr(saved))


def _differs(k: str, now, saved) -> bool:
    """Whether fingerprint entry ``k`` differs; a Loader's run written by an older
    funcnet, which recorded every source of batches as ``"iterable"``, still resumes, and
    ``leaves`` and ``raw_keys`` (explanations only) are never compared."""
    if k in _EXPLANATIONS or (k == "data" and saved == "iterable" and
                              str(now).startswith("Loader(")):
        return False
    return saved != now


def _differs_in(fp: dict, saved: dict, k: str) -> bool:
    """:func:`_differs`, where a tree whose typed keys were raw ``uint32`` key data in the
    saved run (its ``raw_keys`` signature) is the same tree: checkpoint restore turns that
    data into the key."""
    if k in fp.get("raw_keys", {}) and saved.get(k) == fp["raw_keys"][k]:
        return False
    return _differs(k, fp.get(k), saved.get(k))


def _first_leaf_difference(now: list, saved) -> str:
    """The first leaf (``"path dtype[shape]"``) where two :func:`describe_leaves` differ."""
    if not isinstance(saved, list):
        return ""
    for a, b in zip(now, saved):
        if a != b:
            return f": {a} now, {b} in the checkpoint"
    if len(now) != len(saved):
        extra, where = (now[len(saved)], "now only") if len(now) > len(saved) else \
            (saved[len(now)], "in the checkpoint only")
        return f": {len(now)} leaves now, {len(saved)} in the checkpoint ({extra} {where})"
    return ": the same leaves in another tree structure (e.g. another optimizer's state)"


def _explained(k: str, now: dict, saved: dict, step: int) -> str:
    if k in _TREES and isinstance(saved.get("leaves"), dict):
        return f"{k} differs from the checkpoint of epoch {step}" + _first_leaf_difference(
            now["leaves"][k], saved["leaves"].get(k))
    if k == "config" and k not in saved:
        return f"config is {now[k]!r} now, none in the checkpoint of epoch {step}"
    return "{} is {} now but {} in the checkpoint of epoch {}".format(
        k, *_shown(now.get(k), saved.get(k)), step)


def _mismatch(meta, fp: dict, step: int) -> str | None:
    """``None`` when ``meta`` is this run's, else what differs."""
    run = (meta or {}).get(META_KEY) if isinstance(meta, dict) else None
    if not isinstance(run, dict) or not isinstance(run.get("fingerprint"), dict):
        return f"the checkpoint of step {step} was not written by fit (it has no run fingerprint)"
    saved = run["fingerprint"]
    keys = [*fp, *(["config"] if "config" in saved and "config" not in fp else [])]
    # entries a checkpoint written before funcnet recorded them lacks: not compared
    keys = [k for k in keys if k not in _RECORDED_LATER or k in saved]
    diffs = [_explained(k, fp, saved, step) for k in keys if _differs_in(fp, saved, k)]
    return "; ".join(diffs) or None


def _refuse_or_clear(fn: str, manager, why: str, overwrite: bool, writer: bool) -> tuple:
    """Raises :class:`RunMismatchError`, or (``overwrite``) clears and starts afresh."""
    if not overwrite:
        raise RunMismatchError(
            f"{fn}: {_where(manager)} holds another run's checkpoints ({why}); pass "
            f"overwrite=True to delete them and start this run, or use another directory")
    if writer:
        manager.clear()
    return 0, None, {}, None


def restore_template(params, state, opt_state, key) -> dict:
    """The ``like`` of a resume: shapes and the dtypes JAX computes in (a NumPy float64
    leaf trains, and is saved, as float32 when x64 is off; a typed PRNG key, as optax's
    ``noisy_sgd`` keeps in its state, stays a key)."""
    spec = lambda a: jax.ShapeDtypeStruct(  # noqa: E731
        np.shape(a), jax.dtypes.canonicalize_dtype(a.dtype, allow_extended_dtype=True))
    arrays = jax.tree_util.tree_map(spec, (params, state, opt_state))
    return {"params": arrays[0], "state": arrays[1], "opt_state": arrays[2], "epoch": 0,
            "key": key}


def resume_point(fn: str, manager, *, resume: bool, overwrite: bool, fp: dict, like,
                 writer: bool = True):
    """:func:`read_resume_point`, which several processes read in turn and must agree on.

    One process: just that. Several (``jax.distributed``): process 0 (the ``writer``)
    reads first, clearing the directory when ``overwrite`` says so, then the others read;
    then every process compares the epochs they would resume at. A process that could
    not read re-raises its error; processes that found different epochs (a directory on
    each host's local disk, only process 0's holding checkpoints) raise ``ValueError`` on
    every process: training from different starting points would pair one process's
    epoch ``k`` collectives with another's epoch ``j``, which silently mixes two states in
    one "replicated" array and then hangs.
    """
    read = functools.partial(read_resume_point, fn, manager, resume=resume,
                             overwrite=overwrite, fp=fp, like=like, writer=writer)
    if jax.process_count() == 1:
        return read()
    from jax.experimental import multihost_utils

    out, error = None, None
    if not writer:      # after process 0 has read, and cleared with overwrite=True
        multihost_utils.sync_global_devices(f"{fn}: resume")
    try:
        out = read()
    except Exception as e:  # noqa: BLE001 -- re-raised below, after the others learn of it
        error = e
    if writer:
        multihost_utils.sync_global_devices(f"{fn}: resume")
    starts = np.asarray(multihost_utils.process_allgather(
        np.array(-1 if error is not None else out[0], np.int32))).reshape(-1)
    if error is not None:
        raise error
    if len(set(starts.tolist())) > 1:
        found = ", ".join(f"process {i}: {'an error' if e < 0 else f'epoch {e}'}"
                          for i, e in enumerate(starts.tolist()))
        raise ValueError(
            f"{fn}: the processes disagree on where to resume from {_where(manager)} "
            f"({found}); every process must read the same checkpoint directory, on storage "
            f"all hosts share (only process 0 writes to it)")
    return out


def read_resume_point(fn: str, manager, *, resume: bool, overwrite: bool, fp: dict, like,
                      writer: bool = True):
    """``(start_epoch, restored tree or None, history, stopped_by)`` for a run with
    fingerprint ``fp``; ``stopped_by`` is the :func:`stable_name` of the callback that
    stopped the run at the restored checkpoint (recorded by :func:`save_metadata`), or
    ``None``.

    ``resume=False`` into a directory with checkpoints, or any checkpoint of another run,
    raises :class:`RunMismatchError` unless ``overwrite`` (then the directory is cleared and
    the run starts at epoch 0; only the ``writer`` process deletes).
    """
    latest = manager.latest_step()
    if latest is None:
        return 0, None, {}, None
    if not resume:
        return _refuse_or_clear(fn, manager, f"latest: epoch {latest}; resume=False starts a "
                                f"new run", overwrite, writer)
    try:
        meta = manager.metadata(latest)
    except (ValueError, OSError):
        meta = None        # a damaged latest checkpoint: restore() falls back to a readable one
    if meta is not None:
        why = _mismatch(meta, fp, latest)
        if why is not None:
            return _refuse_or_clear(fn, manager, why, overwrite, writer)
    step, tree = manager.restore(like=like)
    meta = manager.metadata(step)
    why = _mismatch(meta, fp, step)
    if why is not None:
        return _refuse_or_clear(fn, manager, why, overwrite, writer)
    run = meta[META_KEY]
    history = run.get("history") or {}
    return int(step), tree, {k: [_NON_FINITE.get(v, v) if isinstance(v, str) else v
                                 for v in vs] for k, vs in history.items()}, \
        run.get("stopped_by")


# JSON has no NaN or infinity: the history stores them as these strings, so that ``None``
# keeps meaning "not measured" (checkpoints of funcnet 0.2.0 wrote NaN as None).
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def save_metadata(fp: dict, history: dict, epoch: int, stopped_by: str | None = None) -> dict:
    """The metadata ``fit`` stores with the checkpoint of ``epoch`` (JSON: a NaN or an
    infinity in the history is written as ``"nan"``, ``"inf"``, ``"-inf"``), and the
    :func:`stable_name` of the callback that stopped the run there, if one did."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return v
    run = {"fingerprint": fp, "epoch": epoch,
           "history": {k: [clean(v) for v in vs] for k, vs in history.items()}}
    if stopped_by is not None:
        run["stopped_by"] = stopped_by
    return {META_KEY: run}

