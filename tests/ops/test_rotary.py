"""rotary_embedding: custom VJP vs twin and central differences, values against the
complex-number formulation (Meta's Llama) and Equinox, the RoPE properties (relative
positions, norms, identity at 0, pass-through tail, layouts a permutation apart), jit,
vmap, grad(grad), bfloat16 at large positions, residuals, shard_map, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, rand

T, H, DH = 5, 2, 6


def _pos(shape, seed, high=50):
    return np.random.default_rng(seed).integers(-3, high, shape).astype(np.int32)


# (id, x shape, positions or None, keyword arguments)
CASES = [
    ("half", (2, T, H, DH), None, {}),
    ("interleaved", (2, T, H, DH), None, {"interleaved": True}),
    ("half_partial", (2, T, H, DH), np.arange(T) + 7, {"rotary_dim": 4}),
    ("interleaved_partial", (T, H, DH), np.arange(T) + 3,
     {"rotary_dim": 2, "interleaved": True, "base": 100.0}),
    ("batched_positions", (2, T, H, DH), _pos((2, T), 1), {}),
    ("batched_positions_interleaved", (2, T, H, DH), _pos((2, T), 2),
     {"interleaved": True, "rotary_dim": 4, "base": 500000.0}),
    ("rank5_broadcast_positions", (3, 2, T, 1, 4), _pos((2, T), 3), {}),
    ("unit_batch_positions", (2, T, H, DH), _pos((1, T), 4, 5000), {"base": 10.0}),
]
IDS = [c[0] for c in CASES]


def _fns(positions, kw):
    return (lambda x: ops.rotary_embedding(x, positions, **kw),
            lambda x: R.rotary_embedding(x, positions, **kw))


@pytest.mark.parametrize("case_id,shape,positions,kw", CASES, ids=IDS)
def test_vjp_matches_reference_and_central_differences(case_id, shape, positions, kw):
    op, twin = _fns(positions, kw)
    out = check_vjp(op, twin, (rand(shape, 10),), seed=11, fd_rtol=1e-6)
    assert out["value"].shape == shape


def _complex_rope(x, positions, base=10000.0, rotary_dim=None, interleaved=False):
    """Meta's Llama formulation in NumPy: ``view_as_complex(x) * polar(1, p theta)``."""
    d = x.shape[-1] if rotary_dim is None else rotary_dim
    theta = 1.0 / (base ** (np.arange(0, d, 2)[: d // 2] / d))
    p = np.arange(x.shape[-3]) if positions is None else np.asarray(positions)
    cis = np.exp(1j * p[..., :, None, None] * theta)             # (..., T, 1, d/2)
    rot, tail = x[..., :d], x[..., d:]
    if interleaved:
        z = (rot[..., 0::2] + 1j * rot[..., 1::2]) * cis
        out = np.stack([z.real, z.imag], axis=-1).reshape(rot.shape)
    else:
        z = (rot[..., : d // 2] + 1j * rot[..., d // 2:]) * cis
        out = np.concatenate([z.real, z.imag], axis=-1)
    return np.concatenate([out, tail], axis=-1)


@pytest.mark.parametrize("case_id,shape,positions,kw", CASES, ids=IDS)
def test_values_equal_the_complex_multiplication(case_id, shape, positions, kw):
    x = rand(shape, 20)
    np.testing.assert_allclose(ops.rotary_embedding(x, positions, **kw),
                               _complex_rope(x, positions, **kw), rtol=1e-12, atol=1e-12)


def test_equals_equinox_rotary_positional_embedding():
    eqx = pytest.importorskip("equinox")
    x = rand((7, 3, 8), 21)
    rope = eqx.nn.RotaryPositionalEmbedding(8, theta=10000.0, dtype=jnp.float64)
    want = jax.jit(jax.vmap(rope, in_axes=1, out_axes=1))(jnp.asarray(x))  # per head
    np.testing.assert_allclose(ops.rotary_embedding(x), want, rtol=1e-12, atol=1e-12)


@jax.jit
def _properties(q, k, pos, shift):
    """RoPE's properties for (T, H, Dh) queries/keys in both layouts (one compilation)."""
    out = {}
    for inter in (False, True):
        rope = lambda v, p, **kw: ops.rotary_embedding(v, p, interleaved=inter, **kw)  # noqa
        logits = lambda a, b: jnp.einsum("thd,shd->hts", a, b)  # noqa: E731
        base = logits(rope(q, pos), rope(k, pos))
        out[inter] = dict(
            shifted=logits(rope(q, pos + shift), rope(k, pos + shift)) - base,
            # <rope(q, m), rope(k, n)> = <rope(q, m - n), k> for every pair (m, n)
            relative=jnp.einsum("tshd,shd->hts", jax.vmap(          # column s: p_t - p_s
                lambda p: rope(q, p), in_axes=1, out_axes=1)(pos[:, None] - pos[None, :]),
                k) - base,
            zero=rope(q, jnp.zeros_like(pos)),
            y=rope(q, pos),
            partial=rope(q, pos, rotary_dim=2),
            grad_partial=jax.grad(lambda v: jnp.sum(jnp.sin(rope(v, pos, rotary_dim=2))))(q),
        )
    return out


def test_rope_properties_relative_positions_norms_identity_and_tail():
    q, k = rand((T, H, DH), 30), rand((T, H, DH), 31)
    pos = jnp.asarray(_pos((T,), 32, 2000))
    out = _properties(q, k, pos, 1234)
    for inter, o in out.items():
        np.testing.assert_allclose(o["shifted"], 0.0, atol=1e-11, err_msg=str(inter))
        np.testing.assert_allclose(o["relative"], 0.0, atol=1e-11, err_msg=str(inter))
        np.testing.assert_array_equal(o["zero"], q)      # cos 0 = 1, sin 0 = 0 exactly
        # each pair keeps its length (pairs (i, i + Dh/2) or (2i, 2i + 1))
        y = np.asarray(o["y"])
        a, b = ((q[..., 0::2], q[..., 1::2]), (y[..., 0::2], y[..., 1::2])) if inter else \
            ((q[..., :3], q[..., 3:]), (y[..., :3], y[..., 3:]))
        np.testing.assert_allclose(np.hypot(*b), np.hypot(*a), rtol=1e-13)
        assert not np.allclose(y, q)                     # it did rotate
        # partial rotary: the tail and its gradient pass through untouched
        np.testing.assert_array_equal(o["partial"][..., 2:], q[..., 2:])
        np.testing.assert_array_equal(o["grad_partial"][..., 2:], np.cos(q[..., 2:]))
        np.testing.assert_allclose(o["partial"][..., :2], _complex_rope(
            q[..., :2], np.asarray(pos), rotary_dim=2), rtol=1e-12, atol=1e-12)


def test_the_layouts_are_one_permutation_apart():
    x, pos = rand((2, T, H, DH), 40), _pos((2, T), 41)
    for d in (DH, 4):
        perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2), np.arange(d, DH)])
        half = ops.rotary_embedding(x[..., perm], pos, rotary_dim=d)
        inter = ops.rotary_embedding(x, pos, rotary_dim=d, interleaved=True)
        np.testing.assert_allclose(half, np.asarray(inter)[..., perm], rtol=1e-13, atol=1e-14)


@jax.jit
def _transforms(x, pos):
    out = []
    for mod in (ops, R):
        def f(v, p):
            y = mod.rotary_embedding(v, p, rotary_dim=4, interleaved=True)
            w = jnp.arange(DH, dtype=v.dtype).reshape((1,) * (v.ndim - 1) + (DH,))
            return jnp.sum(jnp.sin(y) * w)
        gg = jax.grad(lambda v: jnp.sum(jax.grad(f)(v, pos) ** 2))(x)
        per_example = jax.vmap(jax.grad(f))(x, pos)                   # (B, T, H, Dh), (B, T)
        vmapped = jax.vmap(lambda v, p: mod.rotary_embedding(v, p))(x, pos)
        out.append((gg, per_example, vmapped))
    return out


def test_jit_vmap_per_example_grads_and_grad_of_grad():
    x, pos = jnp.asarray(rand((3, T, H, DH), 50)), jnp.asarray(_pos((3, T), 51))
    got, want = _transforms(x, pos)
    assert_close(got, want, 1e-10, "grad(grad), vmap(grad), vmap")
    np.testing.assert_allclose(got[2], ops.rotary_embedding(x, pos), rtol=1e-13)


def test_reference_mode_gives_forward_mode_of_a_linear_map():
    x, t, pos = rand((T, H, DH), 55), rand((T, H, DH), 56), _pos((T,), 57)
    with ops.reference_mode():
        y_dot = jax.jit(lambda x, t: jax.jvp(lambda v: ops.rotary_embedding(v, pos), (x,),
                                             (t,))[1])(x, t)
    np.testing.assert_allclose(y_dot, ops.rotary_embedding(t, pos), rtol=1e-12, atol=1e-13)


def test_residuals_are_the_positions_only():
    x, pos = jnp.asarray(rand((2, T, H, DH), 60)), jnp.asarray(_pos((2, T), 61))
    for positions in (pos, None):
        kept = [(r.shape, r.dtype) for r in saved_residuals(
            lambda v, p=positions: ops.rotary_embedding(v, p), x) if r.nbytes]
        assert kept == ([] if positions is None else [((2, T), np.dtype(np.int32))]), kept
    twin = [r.shape for r in saved_residuals(lambda v: R.rotary_embedding(v, pos), x)]
    assert twin == [(2, T, 1, DH // 2)] * 2, twin                  # autodiff keeps cos, sin
    assert "custom_vjp_call" in str(jax.make_jaxpr(ops.rotary_embedding)(x, pos))


@jax.jit
def _low_precision(x, pos):
    """(y, dx) for bfloat16 ``x`` and for the same values in float64, both layouts."""
    out = {}
    for inter in (False, True):
        f = lambda v: ops.rotary_embedding(v, pos, interleaved=inter)  # noqa: E731
        for v in (x, x.astype(jnp.float64)):
            y, vjp = jax.vjp(f, v)
            out[inter, str(v.dtype)] = y, vjp(jnp.ones_like(y))[0]
    return out


def test_bfloat16_keeps_dtype_and_is_accurate_at_large_positions():
    x = jnp.asarray(rand((2, 8, H, 64), 70), jnp.bfloat16)
    pos = np.arange(8) + 4096
    out = _low_precision(x, jnp.asarray(pos))
    theta = 10000.0 ** (-np.arange(0, 64, 2) / 64)
    for inter in (False, True):
        (y, dx), (want, want_dx) = out[inter, "bfloat16"], out[inter, "float64"]
        assert y.dtype == dx.dtype == jnp.bfloat16
        np.testing.assert_allclose(want, _complex_rope(np.asarray(x, np.float64), pos,
                                                       interleaved=inter), rtol=1e-10, atol=1e-10)
        for got, ref in ((y, want), (dx, want_dx)):
            err = np.abs(np.asarray(got, np.float64) - np.asarray(ref))
            assert np.all(err <= 2.0 ** -8 * np.abs(ref) + 1e-3), err.max()
        # the rotation by bfloat16 angles (positions 4096..4103 round to 4096 or 4112) is
        # far off: the tolerance above can tell
        ang = (pos.astype(jnp.bfloat16)[:, None, None] * theta.astype(jnp.bfloat16)
               ).astype(np.float64)
        v = np.asarray(x, np.float64)
        x1, x2 = (v[..., 0::2], v[..., 1::2]) if inter else (v[..., :32], v[..., 32:])
        first = np.asarray(want)[..., 0::2] if inter else np.asarray(want)[..., :32]
        assert np.abs(x1 * np.cos(ang) - x2 * np.sin(ang) - first).max() > 0.5


def test_differentiates_inside_shard_map():
    """x replicated, positions split over the mesh axis: the output varies along it, and
    x's cotangent must be summed over it (``_mesh.defvjp``); judged by reference_mode."""
    mesh = Mesh(np.array(jax.devices()[:1]), ("i",))
    x, pos = jnp.asarray(rand((2, T, H, DH), 80)), jnp.asarray(_pos((2, T), 81))
    shard_map = getattr(jax, "shard_map", None) or pytest.skip("no jax.shard_map")

    def body(x, p):
        loss = lambda v: jnp.sum(jnp.sin(ops.rotary_embedding(v, p, rotary_dim=4)))  # noqa
        return jax.grad(loss)(x), ops.rotary_embedding(x, p)

    @jax.jit
    def run(x, p):
        inner = shard_map(body, mesh=mesh, in_specs=(P(), P("i")), out_specs=(P(), P("i")))
        outer = jax.grad(lambda v: jnp.sum(jnp.cos(inner(v, p)[1])))(x)
        return inner(x, p)[0], outer

    got = run(x, pos)
    with ops.reference_mode():
        want = run(x, pos)
    assert_close(got, want, 1e-10, "shard_map grads")


def _x():
    return jnp.asarray(rand((2, T, H, DH), 90))


ERRORS = [
    (lambda x, p: ops.rotary_embedding(x, p, rotary_dim=3), ValueError,
     r"rotary_embedding: rotary_dim must be even \(features are rotated in pairs\), got 3"),
    (lambda x, p: ops.rotary_embedding(x, p, rotary_dim=8), ValueError,
     r"rotary_embedding: rotary_dim is 8, expected at most the head size Dh = 6 of x "
     r"\(2, 5, 2, 6\)"),
    (lambda x, p: ops.rotary_embedding(x, p, rotary_dim=0), ValueError,
     r"rotary_embedding: rotary_dim must be >= 2, got 0"),
    (lambda x, p: ops.rotary_embedding(x, p, rotary_dim=4.0), TypeError,
     r"rotary_embedding: rotary_dim must be an int, got float 4.0"),
    (lambda x, p: ops.rotary_embedding(x[..., :5], p), ValueError,
     r"rotary_embedding: rotary_dim defaults to the head size Dh = 5 of x \(2, 5, 2, 5\), "
     r"which is odd"),
    (lambda x, p: ops.rotary_embedding(x, p.astype(jnp.float32)), TypeError,
     r"rotary_embedding: positions must have an integer dtype \(token positions\), got "
     r"float32 with shape \(2, 5\)"),
    (lambda x, p: ops.rotary_embedding(x, p > 0), TypeError,
     r"rotary_embedding: positions must have an integer dtype"),
    (lambda x, p: ops.rotary_embedding(x, [0, 1, 2, 3, 4]), TypeError,
     r"rotary_embedding: positions must be an array, got list"),
    (lambda x, p: ops.rotary_embedding(x, p[:, :4]), ValueError,
     r"rotary_embedding: positions has shape \(2, 4\), expected \(\.\.\., T\) with T = 5 "
     r"\(axis -3 of x \(2, 5, 2, 6\) \(\.\.\., T, H, Dh\)\)"),
    (lambda x, p: ops.rotary_embedding(x, p[0, 0]), ValueError,
     r"rotary_embedding: positions has shape \(\), expected \(\.\.\., T\)"),
    (lambda x, p: ops.rotary_embedding(x, jnp.concatenate([p, p, p])), ValueError,
     r"rotary_embedding: positions has shape \(6, 5\), expected .* broadcastable to the "
     r"batch axes \(2,\) of x"),
    (lambda x, p: ops.rotary_embedding(x, p[None]), ValueError,
     r"rotary_embedding: positions has shape \(1, 2, 5\), expected .* broadcastable"),
    (lambda x, p: ops.rotary_embedding(x, p, base=1.0), ValueError,
     r"rotary_embedding: base must be in \(1, inf\), got 1"),
    (lambda x, p: ops.rotary_embedding(x, p, base=-10000.0), ValueError,
     r"rotary_embedding: base must be in \(1, inf\), got -10000"),
    (lambda x, p: ops.rotary_embedding(x, p, base=float("nan")), ValueError,
     r"rotary_embedding: base must be finite, got nan"),
    (lambda x, p: ops.rotary_embedding(x, p, base="1e4"), TypeError,
     r"rotary_embedding: base must be a Python float, got str"),
    (lambda x, p: ops.rotary_embedding(x, p, interleaved="yes"), TypeError,
     r"rotary_embedding: interleaved must be a bool, got str"),
    (lambda x, p: ops.rotary_embedding(x.astype(jnp.int32), p), TypeError,
     r"rotary_embedding: x must have a floating dtype, got int32 with shape \(2, 5, 2, 6\)"),
    (lambda x, p: ops.rotary_embedding(x[0, :, 0], p[0]), ValueError,
     r"rotary_embedding: x has shape \(5, 6\), expected rank >= 3"),
]


@pytest.mark.parametrize("call, exc, match", ERRORS)
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, (_x(), jnp.asarray(_pos((2, T), 91))), exc, match)


def test_traced_static_arguments_are_refused_under_jit():
    x = _x()
    with pytest.raises(TypeError, match=r"rotary_embedding: base must be a Python float"):
        jax.jit(lambda x, b: ops.rotary_embedding(x, base=b))(x, 100.0)
    with pytest.raises(TypeError, match=r"rotary_embedding: rotary_dim must be an int"):
        jax.jit(lambda x, d: ops.rotary_embedding(x, rotary_dim=d))(x, 4)
