"""Batches and training state from the host to the device(s): where ``fit`` puts them
(:func:`platform`, :func:`batch_putter`, :func:`place`), and a bounded background
prefetcher that does it one step ahead.

``fit``'s per-step path (arrays too large for the device, or an iterable of batches)
reads every batch through :class:`Prefetcher`: with ``size > 0`` (``fit``'s default on an
accelerator) a thread draws the next batches from the source and puts them on the device
(``jax.device_put``, or the mesh's batch sharding) while the current step runs; with
``size=0`` (the default on the CPU, where the thread costs more than it overlaps) the
same happens in the calling thread, batch by batch. The queue holds at most ``size``
batches; an exception in the source or the transfer is re-raised in the training loop
with its traceback; and the thread never outlives the ``with`` block (it is stopped and
joined on exit, also on an exception or an early stop).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable

import jax
import numpy as np

from funcnet.train import sharding
from funcnet.train._checks import check_pair

__all__ = ["Prefetcher", "batch_putter", "place", "platform"]

_ITEM, _END, _ERROR = range(3)


class Prefetcher:
    """Iterates over ``put(batch)`` for each batch of ``source``, ``size`` batches ahead.

    Use it as a context manager::

        with Prefetcher(batches, put, size=2) as feed:
            for batch in feed:
                ...

    Args:
      source: an iterable of batches (iterated in the background thread).
      put: a function applied to each batch in the thread (checks, ``device_put``).
      size: the most batches waiting on the device; ``0`` runs everything in the calling
        thread (no background thread).
    """

    def __init__(self, source: Iterable, put: Callable, size: int = 2):
        self._source, self._put, self._size = source, put, size
        self._queue: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterator = None

    # ------------------------------------------------------------------ thread side
    def _offer(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        iterator = None
        try:
            iterator = iter(self._source)
            for batch in iterator:
                if self._stop.is_set() or not self._offer((_ITEM, self._put(batch))):
                    return
            self._offer((_END, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread
            self._offer((_ERROR, err))
        finally:
            close = getattr(iterator, "close", None)
            if callable(close):
                close()

    # ---------------------------------------------------------------- caller side
    def __enter__(self) -> "Prefetcher":
        if self._size > 0:
            self._thread = threading.Thread(target=self._work, name="funcnet-prefetch",
                                            daemon=True)
            self._thread.start()
        else:
            self._iterator = iter(self._source)
        return self

    def __iter__(self):
        if self._thread is None and self._iterator is not None:
            return map(self._put, self._iterator)   # no thread: no Python frame per batch
        return self

    def __next__(self):
        if self._thread is None:
            return self._put(next(self._iterator))
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._stop.set()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops the thread (after the batch it is preparing) and waits for it."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
            self._thread = None
        elif self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if callable(close):
                close()
            self._iterator = None


def platform(mesh) -> str:
    """The platform ``fit`` trains on: the mesh's devices, else the first local device."""
    device = jax.local_devices()[0] if mesh is None else mesh.devices.flat[0]
    return device.platform


def batch_putter(fn: str, mesh, devices: int, labels_ok: Callable | None, checked: bool):
    """``put(batch)``: checks one ``(x, y)`` batch (unless ``checked``) and places it.

    With a mesh the batch is split over its devices. On one CPU device host arrays are
    handed to the jitted step as they are: it reads them for a few microseconds, where a
    ``jax.device_put`` first costs several times that (the step's own work on a small
    model). On an accelerator the batch is copied to the device (in the prefetch thread).
    """
    if mesh is not None:
        rows = sharding.batch_sharding(mesh)
        place = lambda batch: sharding.put_batch(batch, rows)  # noqa: E731
    elif platform(mesh) == "cpu":
        place = _host_batch
    else:
        place = jax.device_put
    if checked:
        return place

    def put(batch):
        x, y = check_pair(fn, "a batch of data", batch, devices,
                          f"the {devices} devices of the mesh")
        if labels_ok is not None:
            labels_ok(x, y)
        return place((x, y))

    return put


def _host_batch(batch):
    """A batch for a jitted step on the CPU: NumPy and jax arrays as they are."""
    if all(isinstance(a, (np.ndarray, jax.Array)) for a in jax.tree_util.tree_leaves(batch)):
        return batch
    return jax.device_put(batch)


def place(tree, mesh, like):
    """Fresh device copies of ``tree`` (``fit`` donates them; the caller keeps its own).

    On a mesh, a leaf whose counterpart in ``like`` (what the caller passed) is laid out
    on that mesh (tensor-parallel, FSDP) keeps that sharding; the rest is replicated.
    """
    if mesh is None:  # committed to one device, whatever the source: one jit cache entry
        device = jax.local_devices()[0]

        def fresh(a):
            if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1:
                # e.g. params a mesh run returned: device_put(may_alias=False) would hand
                # back the device's own shard, which fit then donates (deleting the caller's)
                a = sharding.to_host(a)
            return jax.device_put(a, device, may_alias=False)

        return jax.tree_util.tree_map(fresh, tree)
    return sharding.put_on_mesh(tree, mesh, like, copy=True)
