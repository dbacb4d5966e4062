"""batches (iterator) and epoch_batches (stacked for lax.scan)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.data import Loader, batches, epoch_batches, epoch_keys


def data(n=10):
    return np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n, dtype=np.int32)


@pytest.mark.parametrize("drop_last, sizes", [(True, [4, 4]), (False, [4, 4, 2])])
def test_batches_in_order(drop_last, sizes):
    x, y = data()
    out = list(batches(x, y, 4, drop_last=drop_last))
    assert [len(b[1]) for b in out] == sizes
    np.testing.assert_array_equal(np.concatenate([b[1] for b in out]), y[:sum(sizes)])
    for xb, yb in out:
        np.testing.assert_array_equal(xb[:, 0] / 2, yb)
        assert isinstance(xb, np.ndarray)


@pytest.mark.parametrize("key", [1, jax.random.PRNGKey(1), jax.random.key(1)])
def test_batches_shuffled_deterministically(key):
    x, y = data()
    out = list(batches(x, y, 5, key=key))
    seen = np.concatenate([b[1] for b in out])
    np.testing.assert_array_equal(np.sort(seen), y)
    assert not np.array_equal(seen, y)
    again = np.concatenate([b[1] for b in batches(x, y, 5, key=key)])
    np.testing.assert_array_equal(seen, again)
    expected = np.asarray(jax.random.permutation(key if not isinstance(key, int)
                                                 else jax.random.PRNGKey(key), 10))
    np.testing.assert_array_equal(seen, expected)


def test_batches_jnp_in_jnp_out():
    x, y = data()
    xb, yb = next(batches(jnp.asarray(x), jnp.asarray(y), 3, key=0))
    assert isinstance(xb, jax.Array) and xb.shape == (3, 2) and yb.shape == (3,)


@pytest.mark.parametrize("fn", [
    lambda x, y, b: batches(x, y, b),  # checked eagerly, before the first next()
    lambda x, y, b: epoch_batches(x, y, b, jax.random.PRNGKey(0)),
])
@pytest.mark.parametrize("batch_size", [0, -1, 11])
def test_bad_batch_size(fn, batch_size):
    x, y = data()
    with pytest.raises(ValueError, match=rf"batch_size must be in \[1, 10\].*got {batch_size}"):
        fn(x, y, batch_size)


@pytest.mark.parametrize("fn", [batches, lambda x, y, b: epoch_batches(x, y, b, 0),
                                lambda x, y, b: Loader(x, y, b)])
def test_length_mismatch(fn):
    with pytest.raises(ValueError, match=r"^(batches|epoch_batches|Loader): x has shape "
                                         r"\(10, 2\) but y has shape \(9,\), expected the same "
                                         r"leading \(batch\) size$"):
        fn(np.zeros((10, 2)), np.zeros(9), 2)
    with pytest.raises(ValueError, match=r"y has shape \(\), expected a leading \(batch\) axis"):
        fn(np.zeros((10, 2)), np.zeros(()), 2)
    with pytest.raises(TypeError, match=r"x\[0\]\[0\] must be an array, got float"):
        fn([[0.0]] * 10, np.zeros(10), 2)
    with pytest.raises(TypeError, match=r"y must be an array, got NoneType"):
        fn(np.zeros((10, 2)), None, 2)


def test_length_mismatch_under_jit():
    """The checks read static shapes: epoch_batches raises the same error while tracing."""
    @jax.jit
    def first_batch(x, y, key):
        return epoch_batches(x, y, 2, key)[0][0]

    with pytest.raises(ValueError, match=r"epoch_batches: x has shape \(10, 2\) but y has "
                                         r"shape \(9,\)"):
        first_batch(jnp.zeros((10, 2)), jnp.zeros(9), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"epoch_batches: batch_size must be in \[1, 10\]"):
        jax.jit(lambda x, y, k: epoch_batches(x, y, 11, k))(jnp.zeros((10, 2)), jnp.zeros(10),
                                                            jax.random.PRNGKey(0))
    assert first_batch(jnp.ones((10, 2)), jnp.zeros(10), jax.random.PRNGKey(0)).shape == (2, 2)


def test_batch_size_must_be_int():
    x, y = data()
    with pytest.raises(TypeError, match="batch_size must be an int"):
        batches(x, y, 2.0)


@pytest.mark.parametrize("batch_size", [1, 3, 10])
def test_epoch_batches_shapes_and_contents(batch_size):
    x, y = data()
    key = jax.random.PRNGKey(4)
    xb, yb = epoch_batches(x, y, batch_size, key)
    nb = 10 // batch_size
    assert xb.shape == (nb, batch_size, 2) and yb.shape == (nb, batch_size)
    idx = np.asarray(jax.random.permutation(key, 10))[:nb * batch_size]
    np.testing.assert_array_equal(yb.reshape(-1), y[idx])
    np.testing.assert_array_equal(xb.reshape(-1, 2), x[idx])


def test_epoch_batches_under_jit_with_scan():
    x, y = data()

    traces = []

    @jax.jit
    def epoch_sum(x, y, key):
        traces.append(1)  # Python side effect: runs once per trace
        xb, yb = epoch_batches(x, y, 3, key)

        def step(total, batch):
            bx, by = batch
            return total + jnp.sum(by, dtype=jnp.int32), jnp.sum(bx)

        return jax.lax.scan(step, jnp.zeros((), jnp.int32), (xb, yb))

    key = jax.random.PRNGKey(5)
    total, per_batch = epoch_sum(jnp.asarray(x), jnp.asarray(y), key)
    xb, yb = epoch_batches(x, y, 3, key)
    assert per_batch.shape == (3,)
    assert int(total) == int(np.sum(yb))
    np.testing.assert_allclose(per_batch, np.sum(np.asarray(xb), axis=(1, 2)))
    # a new key gives a new permutation without recompiling
    epoch_sum(jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(6))
    assert len(traces) == 1


def test_epoch_batches_traced_batch_size_rejected():
    x, y = data()
    with pytest.raises(TypeError, match="batch_size must be an int"):
        jax.jit(epoch_batches)(x, y, 2, jax.random.PRNGKey(0))


def test_epoch_keys_is_fold_in_then_split():
    key = jax.random.PRNGKey(3)
    shuffle, model = epoch_keys(key, 2)
    want = jax.random.split(jax.random.fold_in(key, 2))
    np.testing.assert_array_equal(shuffle, want[0])
    np.testing.assert_array_equal(model, want[1])
    np.testing.assert_array_equal(jax.jit(epoch_keys)(key, 2)[0], shuffle)   # traced epoch
    np.testing.assert_array_equal(epoch_keys(3, 2)[0], shuffle)              # int seed


def test_loader_epochs_match_epoch_batches_and_read_only_batch_rows():
    x, y = data(10)
    loader = Loader(x, y, 3, key=7)
    assert len(loader) == 3 and len(Loader(x, y, 3, drop_last=False)) == 4
    for epoch in range(2):
        xb, yb = epoch_batches(x, y, 3, epoch_keys(7, epoch)[0])
        got = list(loader(epoch))
        np.testing.assert_array_equal(np.stack([b[0] for b in got]), xb)
        np.testing.assert_array_equal(np.stack([b[1] for b in got]), yb)
        again = list(loader(epoch))                      # re-creatable: the same batches
        np.testing.assert_array_equal(again[1][1], got[1][1])
    first, second = [np.concatenate([b[1] for b in loader]) for _ in range(2)]
    np.testing.assert_array_equal(first, np.concatenate([b[1] for b in loader(0)]))
    np.testing.assert_array_equal(second, np.concatenate([b[1] for b in loader(1)]))
    ordered = list(Loader(x, y, 4, drop_last=False, transform=lambda a, b: (a * 0, b + 1))(5))
    assert [len(b[1]) for b in ordered] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in ordered]), y + 1)
    assert not np.any(ordered[0][0])


def test_loader_reads_a_memory_map(tmp_path):
    x, y = data(10)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    got = list(Loader(mapped, y, 5, key=1)(0))
    want = list(Loader(x, y, 5, key=1)(0))
    np.testing.assert_array_equal(got[1][0], want[1][0])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=0), ValueError, r"Loader: batch_size must be in \[1, 10\]"),
    (dict(batch_size=2.0), TypeError, "Loader: batch_size must be an int"),
    (dict(key="k"), TypeError, "Loader: key must be a PRNG key"),
    (dict(transform=3), TypeError, "Loader: transform must be callable"),
    (dict(drop_last=None), TypeError, "Loader: drop_last must be a bool"),
])
def test_loader_rejects_bad_arguments(kwargs, error, match):
    x, y = data(10)
    with pytest.raises(error, match=match):
        Loader(x, y, **{"batch_size": 2, **kwargs})
    with pytest.raises(ValueError, match="Loader: epoch must be >= 0"):
        Loader(x, y, 2, key=0)(-1)


def test_a_transform_that_takes_a_key_gets_one_per_batch_and_epoch():
    """Random augmentation reproducible across processes and resumes: batch i of epoch e
    gets fold_in(fold_in(epoch_keys(key, e)[0], 1), i), whatever Loader object runs it."""
    x, y = np.arange(40.0).reshape(10, 4), np.arange(10)
    seen = []

    def noisy(xb, yb, key):
        seen.append(key)
        return xb + jax.random.normal(key, xb.shape), yb

    def run(epoch):
        return [xb for xb, _ in Loader(x, y, 3, key=7, transform=noisy)(epoch)]

    first, again, other = run(1), run(1), run(2)
    assert len(first) == 3
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[0], first[1])
    base = jax.random.fold_in(epoch_keys(7, 1)[0], 1)
    np.testing.assert_array_equal(jax.random.key_data(seen[2]) if jnp.issubdtype(
        seen[2].dtype, jax.dtypes.prng_key) else seen[2], jax.random.fold_in(base, 2))
    plain = Loader(x, y, 3, key=7, transform=lambda xb, yb: (xb * 2, yb))(1)   # no key
    np.testing.assert_array_equal(next(iter(plain))[0], x[Loader(x, y, 3, key=7).order(1)[:3]] * 2)
    with pytest.raises(ValueError, match=r"Loader: transform takes a key .*give the Loader "
                                         r"a key="):
        Loader(x, y, 3, transform=noisy)


def test_only_a_required_third_argument_makes_a_transform_keyed():
    """A third positional parameter with a default is an option of a plain transform: it
    keeps its default and needs no key; *args (or a required third parameter) gets the
    key; a keyword-only key is not given one."""
    x, y = np.arange(40.0).reshape(10, 4), np.arange(10)
    rows = x[Loader(x, y, 3, key=7).order(1)[:3]]

    def scale(xb, yb, factor=0.5):
        return xb * factor, yb

    np.testing.assert_array_equal(next(iter(Loader(x, y, 3, transform=scale)(1)))[0],
                                  x[:3] * 0.5)                   # accepted without a key
    np.testing.assert_array_equal(next(iter(Loader(x, y, 3, key=7, transform=scale)(1)))[0],
                                  rows * 0.5)                    # factor stays 0.5
    got = []

    def variadic(xb, yb, *args):
        got.append(args)
        return xb, yb

    list(Loader(x, y, 3, key=7, transform=variadic)(1))
    assert [len(a) for a in got] == [1, 1, 1]                    # *args: one key per batch
    with pytest.raises(ValueError, match="Loader: transform takes a key"):
        Loader(x, y, 3, transform=variadic)
    kw = Loader(x, y, 3, key=7, transform=lambda xb, yb, *, key=None: (xb + (key is None), yb))
    np.testing.assert_array_equal(next(iter(kw(1)))[0], rows + 1)  # keyword-only: no key


@pytest.mark.parametrize("drop_last", ["False", None, 0, np.array(False)])
def test_batches_rejects_a_drop_last_that_is_not_a_bool(drop_last):
    x, y = data()
    with pytest.raises(TypeError, match=rf"^batches: drop_last must be a bool, got "
                                        rf"{type(drop_last).__name__} "):
        batches(x, y, 4, drop_last=drop_last)                    # at the call, not at next
    assert [len(b) for _, b in batches(x, y, 4, drop_last=np.bool_(False))] == [4, 4, 2]
