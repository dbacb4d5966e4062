"""Sinusoidal embeddings of positions or timesteps (the Transformer's fixed positional
encoding; a diffusion model's timestep embedding).

For a position (or time) ``t`` and ``F = 2H`` features, with frequencies ``f_k =
max_period^(-k/H)``, ``k = 0 .. H-1``::

    e(t) = [sin(t f_0), ..., sin(t f_{H-1}), cos(t f_0), ..., cos(t f_{H-1})]

(the sines then the cosines, as Flax's ``sinusoidal_init`` and tensor2tensor lay them out;
Vaswani et al. interleave the same values). The exponent ``-k/H`` is Vaswani et al.'s (and
Flax's); DDPM's code divides by ``H - 1`` instead, so its frequencies differ slightly
from these. Backward (floating ``t``)::

    dt = sum_k f_k (dy_sin_k cos(t f_k) - dy_cos_k sin(t f_k))

It keeps only ``t``. Integer positions get no gradient.

References:
  Vaswani et al. (2017), "Attention Is All You Need", https://arxiv.org/abs/1706.03762,
  section 3.5. Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models",
  https://arxiv.org/abs/2006.11239, appendix B (the timestep embedding).
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mesh import defvjp
from funcnet.ops._mode import has_twin

__all__ = ["sinusoidal_embedding"]


def frequencies(features: int, max_period: float, dtype):
    """``f_k = max_period^(-k/H)``, ``k = 0 .. H-1``, ``H = features / 2``."""
    half = features // 2
    return jnp.exp(jnp.arange(half, dtype=dtype) * (-math.log(max_period) / half))


def angles(t, features: int, max_period: float, dtype):
    """``t f_k``, shape ``(*t.shape, H)``."""
    f = frequencies(features, max_period, dtype)
    return t.astype(dtype)[..., None] * f.reshape((1,) * t.ndim + (-1,))


def sinusoidal_forward(t, features: int, max_period: float, dtype):
    """``[sin(t f), cos(t f)]`` computed in at least float32 and returned in ``dtype``: in
    bfloat16 the positions 256 and 257 would be one number, and ``t f`` near ``t = 1000``
    off by ~2 radians."""
    a = angles(t, features, max_period, _checks.compute_dtype(dtype))
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1).astype(dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _sinusoidal(t, features, max_period):
    return sinusoidal_forward(t, features, max_period, t.dtype)


def _sinusoidal_fwd(t, features, max_period):
    return _sinusoidal.fun(t, features, max_period), t


def _sinusoidal_bwd(features, max_period, t, g):
    wide = _checks.compute_dtype(t.dtype)           # as the forward
    a = angles(t, features, max_period, wide)
    f = frequencies(features, max_period, wide).reshape((1,) * t.ndim + (-1,))
    half, g = features // 2, g.astype(wide)
    return (jnp.sum(f * (g[..., :half] * jnp.cos(a) - g[..., half:] * jnp.sin(a)),
                    axis=-1).astype(t.dtype),)


defvjp(_sinusoidal, _sinusoidal_fwd, _sinusoidal_bwd)


def check_sinusoidal_args(positions, features, max_period, dtype):
    """``(positions, features, max_period, dtype)`` (shared with the twin): floating or
    integer positions, an even ``features >= 2``, ``max_period > 0``; ``dtype`` the output's
    (floating positions keep theirs; integer ones default to JAX's float)."""
    fn = "sinusoidal_embedding"
    _checks.check_array(fn, "positions", positions)
    positions = as_array(positions)
    kind = jnp.result_type(positions)
    if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
        raise TypeError(f"{fn}: positions must be integers or floats (positions or "
                        f"timesteps), got {kind}")
    features = _checks.static_int(fn, "features", features, minimum=2)
    if features % 2:
        raise ValueError(f"{fn}: features must be even (a sine and a cosine per "
                         f"frequency), got {features}")
    max_period = _checks.static_float(fn, "max_period", max_period, 0.0,
                                      low_inclusive=False)
    if jnp.issubdtype(kind, jnp.floating):
        if dtype is not None and jnp.dtype(dtype) != kind:
            raise TypeError(f"{fn}: dtype {jnp.dtype(dtype)} differs from the floating "
                            f"positions' {kind}; cast the positions instead")
        return positions, features, max_period, kind
    dtype = _checks.check_dtype(fn, "dtype", jnp.result_type(float) if dtype is None
                                else dtype)
    return positions, features, max_period, dtype


@has_twin
def sinusoidal_embedding(positions, features: int, *, max_period: float = 10000.0,
                         dtype=None):
    """Sinusoidal embedding of positions or timesteps (module docstring):
    ``[sin(t f), cos(t f)]`` with ``f_k = max_period^(-k/H)``, ``F = 2H`` features.

    Backward (floating positions): ``dt = sum_k f_k (dy_sin_k cos(t f_k) - dy_cos_k
    sin(t f_k))``; residual ``t``. Integer positions are exact indices (no gradient).
    Computed in at least float32 (then cast): a bfloat16 or float16 output keeps
    positions above 256 (2048) apart.

    Shapes:
      positions: any shape ``(...)``, e.g. ``(T,)`` token positions or ``(N,)`` diffusion
        timesteps; output ``(..., F)``.

    Args:
      positions: integer or floating array.
      features: static even int ``F >= 2``.
      max_period: static Python float ``> 0`` (default 10000, the Transformer's).
      dtype: output dtype for integer positions (default JAX's float); floating
        positions give their own dtype.

    Returns:
      Array ``(*positions.shape, features)``.

    Raises:
      TypeError: positions neither integer nor floating, a non-static setting, a
        ``dtype`` other than floating positions' own.
      ValueError: odd or < 2 ``features``, ``max_period <= 0``.

    References:
      Vaswani et al. (2017), https://arxiv.org/abs/1706.03762, section 3.5.
    """
    t, features, max_period, dtype = check_sinusoidal_args(positions, features, max_period,
                                                           dtype)
    if jnp.issubdtype(t.dtype, jnp.integer):
        return sinusoidal_forward(t, features, max_period, dtype)
    return _sinusoidal(t, features, max_period)
