"""Batches from iterables: the prefetcher (order, bound, errors, no leftover thread) and fit."""
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import data, train
from funcnet.train import feed
from funcnet.train.feed import Prefetcher
from tests.train._setup import ADAM, FIT, KEY, MLP, assert_trees_equal, init, subset

X, Y = subset(192)


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "funcnet-prefetch"]


def test_prefetcher_keeps_order_and_a_bounded_lead():
    drawn = []

    def source():
        for i in range(20):
            drawn.append(i)
            yield i

    with Prefetcher(source(), lambda b: b * 10, size=2) as feed:
        first = next(feed)
        time.sleep(0.2)                     # let the thread run ahead as far as it may
        assert len(drawn) <= 1 + 2 + 1      # consumed + queued + the one waiting to enter
        rest = list(feed)
    assert [first] + rest == [10 * i for i in range(20)]
    assert not _prefetch_threads()


def test_prefetcher_reraises_and_stops_its_thread():
    def source():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        with Prefetcher(source(), lambda b: b, size=2) as feed:
            list(feed)
    assert not _prefetch_threads()
    closed = []

    def endless():
        try:
            i = 0
            while True:
                i += 1
                yield i
        finally:
            closed.append(True)

    with Prefetcher(endless(), lambda b: b, size=3) as feed:
        assert next(feed) == 1                          # stop early: close() must end it
    assert not _prefetch_threads() and closed == [True]
    with Prefetcher(iter([1, 2]), lambda b: -b, size=0) as feed:   # no thread
        assert list(feed) == [-1, -2] and not _prefetch_threads()


def test_fit_on_a_generator_callable_matches_arrays_and_propagates_errors():
    params, state = init(MLP)
    arrays = train.fit(MLP, params, state, ADAM, (X, Y), 2, scan=False, **FIT)

    def batches(epoch):                     # fit's own batches, yielded by a generator
        order = np.asarray(jax.random.permutation(data.epoch_keys(KEY, epoch)[0], 192))
        for i in range(6):
            idx = order[32 * i:32 * (i + 1)]
            yield X[idx], Y[idx]

    gen = train.fit(MLP, params, state, ADAM, batches, 2, key=KEY, progress=False)
    assert_trees_equal(arrays[:3], gen[:3])

    def broken(epoch):
        yield X[:32], Y[:32]
        raise RuntimeError("bad shard 7")

    with pytest.raises(RuntimeError, match="bad shard 7"):
        train.fit(MLP, params, state, ADAM, broken, 2, key=KEY, progress=False)
    assert not _prefetch_threads()
    bad = Y[:32].copy()
    bad[0] = 12
    for kind in (np.asarray, jnp.asarray):      # jax batches are checked as NumPy ones are
        with pytest.raises(ValueError, match=r"fit: the labels in a batch's y hold 12 \(at "
                                             r"index \(0,\)\), expected class indices in "
                                             r"\[0, 10\)"):
            train.fit(MLP, params, state, ADAM, lambda e: [(kind(X[:32]), kind(bad))], 1,
                      key=KEY, progress=False)
    with pytest.raises(TypeError, match=r"^fit: a batch of data must be a pair \(x, y\) of "
                                        r"arrays, got str$"):
        train.fit(MLP, params, state, ADAM, lambda e: ["xy"], 1, key=KEY, progress=False)
    with pytest.raises(ValueError, match=r"^fit: a batch of data x has shape \(32, 64\) but a "
                                         r"batch of data y has shape \(31,\), expected the same "
                                         r"leading \(batch\) size$"):
        train.fit(MLP, params, state, ADAM, lambda e: [(X[:32], Y[:31])], 1, key=KEY,
                  progress=False)
    with pytest.raises(ValueError, match=r"fit: data gave no batches for epoch 0"):
        train.fit(MLP, params, state, ADAM, lambda e: [], 1, key=KEY, progress=False)


def test_a_re_iterable_works_and_a_one_shot_iterator_is_refused():
    params, state = init(MLP)
    listed = [(X[:32], Y[:32]), (X[32:64], Y[32:64])]
    *_, hist = train.fit(MLP, params, state, ADAM, listed, 2, key=KEY, progress=False)
    assert hist["epoch"] == [1, 2]
    with pytest.raises(TypeError, match=r"fit: data is an iterator \(list_iterator\), which "
                                        r"can be consumed only once"):
        train.fit(MLP, params, state, ADAM, iter(listed), 2, key=KEY, progress=False)


def test_prefetch_default_on_cpu_runs_no_thread_and_every_feed_gives_the_same_params(
        monkeypatch):
    """prefetch=None is 0 on a CPU backend (the thread cost more than it overlapped there)
    and 2 on an accelerator; 0, 2, the default and the scan path train bit-identically."""
    assert jax.local_devices()[0].platform == "cpu"
    params, state = init(MLP)
    where = {}

    def loader(tag):
        def batches(epoch):
            for xb, yb in data.Loader(X, Y, 32, key=KEY)(epoch):
                where.setdefault(tag, set()).add(threading.current_thread().name)
                yield xb, yb
        return batches

    main = threading.main_thread().name
    runs = {p: train.fit(MLP, params, state, ADAM, loader(p), 2, key=KEY, progress=False,
                         prefetch=p) for p in (None, 0, 2)}
    monkeypatch.setattr(feed, "platform", lambda mesh: "gpu")    # what an accelerator gets
    runs["accelerator default"] = train.fit(MLP, params, state, ADAM, loader("gpu"), 2,
                                            key=KEY, progress=False)
    monkeypatch.undo()
    assert where[None] == where[0] == {main}
    assert where[2] == where["gpu"] == {"funcnet-prefetch"}
    for p in (0, 2):
        runs[f"arrays, prefetch={p}"] = train.fit(MLP, params, state, ADAM, (X, Y), 2,
                                                  scan=False, prefetch=p, **FIT)
    runs["scan"] = train.fit(MLP, params, state, ADAM, (X, Y), 2, scan=True, **FIT)
    for name, run in runs.items():
        assert_trees_equal(run[:3], runs[None][:3])
        assert run[3]["loss"] == runs[None][3]["loss"], name


def test_per_step_path_hands_host_batches_to_the_step_on_cpu(monkeypatch):
    """No ``jax.device_put`` per batch on one CPU device: it cost several times what the
    jitted step takes to read the NumPy arrays (benchmarks/dispatch.py)."""
    put = []
    device_put = jax.device_put

    def counting(tree, *args, **kwargs):
        put.extend((a.shape, str(a.dtype)) for a in jax.tree_util.tree_leaves(tree)
                   if hasattr(a, "shape"))
        return device_put(tree, *args, **kwargs)

    monkeypatch.setattr(jax, "device_put", counting)
    params, state = init(MLP)
    train.fit(MLP, params, state, ADAM, (X, Y), 1, scan=False, **FIT)
    train.fit(MLP, params, state, ADAM, data.Loader(X, Y, 32, key=KEY), 1, key=KEY,
              progress=False)
    assert put and ((32, 64), "float32") not in put and ((32,), str(Y.dtype)) not in put
