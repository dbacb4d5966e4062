"""Per-example normalisation over groups of channels: ``GroupNorm`` and ``InstanceNorm``.

As :func:`~funcnet.nn.LayerNorm`, no running averages, no ``state``, the same computation
in training and evaluation and no dependence on the batch size; the statistics are those
of each example's group of channels over all its positions (ResNet-GN, diffusion U-Nets).

References:
  Wu & He (2018), "Group Normalization", https://arxiv.org/abs/1803.08494.
  Ulyanov, Vedaldi & Lempitsky (2016), "Instance Normalization: The Missing Ingredient for
  Fast Stylization", https://arxiv.org/abs/1607.08022.
"""
from __future__ import annotations

from funcnet import _checks, ops
from funcnet._describe import described
from funcnet.nn import initializers
from funcnet.nn.base import Layer
from funcnet.nn.layer_norm import _norm_layer

__all__ = ["GroupNorm", "InstanceNorm"]


def _group_layer(name, num_groups, group_size, eps, use_scale, use_bias, scale_init,
                 bias_init, dtype):
    """The layer of :func:`funcnet.ops.group_norm` with ``G = num_groups``, or ``G = C /
    group_size`` (checked here: it is the layer's own argument) when ``num_groups`` is
    ``None``."""
    eps = _checks.static_float(name, "eps", eps, 0.0)

    def op(x, gamma, beta, eps):
        groups = num_groups
        if groups is None:
            c = x.shape[-1] if x.ndim else 0
            if c % group_size:
                raise ValueError(f"x has shape {tuple(x.shape)}, expected a number of "
                                 f"channels (last axis) divisible by group_size={group_size}")
            groups = max(c // group_size, 1)      # C = 0, rank 0: the op's error
        return ops.group_norm(x, gamma, beta, groups, eps)

    return _norm_layer(name, eps, use_scale, use_bias, scale_init, bias_init, dtype, op,
                       min_rank=2, layout="(N, ..., C)")


@described
def GroupNorm(num_groups: int | None = 32, *, group_size: int | None = None,
              eps: float = 1e-5, use_scale: bool = True, use_bias: bool = True,
              scale_init=initializers.ones, bias_init=initializers.zeros,
              dtype=None) -> Layer:
    """Group normalization (Wu & He 2018) of channels-last inputs.

    Each example's ``C`` channels are split into ``G`` groups of ``C/G`` consecutive
    channels; each group is normalised by the mean and (biased) variance of its entries
    over every non-batch axis, then ``y = xhat * gamma + beta`` per channel. Computed by
    :func:`funcnet.ops.group_norm` (layer norm's backward formula per group).

    ``num_groups`` / ``group_size`` as ``flax.linen.GroupNorm``: give exactly one of them,
    so ``group_size`` needs ``num_groups=None`` (``GroupNorm(None, group_size=16)``).
    ``GroupNorm(1)`` is layer norm over all of an example's features (per-channel
    ``gamma``); ``group_size=1`` is :func:`InstanceNorm`. ``eps = 1e-5`` as
    :func:`LayerNorm`, PyTorch's ``GroupNorm`` and Equinox's (Flax uses ``1e-6``).

    Shapes:
      input: ``(N, ..., C)``, rank >= 2, the first axis the batch (as Flax: an unbatched
        image ``(H, W, C)`` is read as a batch of ``H``); output: the same shape.
      params: ``{"gamma": (C,), "beta": (C,)}`` (ones / zeros), without ``"gamma"`` when
        ``use_scale=False`` and without ``"beta"`` when ``use_bias=False``; state ``()``.

    Args:
      num_groups: ``G >= 1``, dividing ``C``; ``None`` when ``group_size`` is given.
      group_size: channels per group (``G = C / group_size``), dividing ``C``; or ``None``.
      eps, use_scale, use_bias, scale_init, bias_init, dtype: as :func:`LayerNorm`
        (``eps >= 0`` is added to each group's variance; the input and the params are
        promoted to their common dtype).

    Returns:
      A :class:`Layer` named ``"GroupNorm"``.

    Raises:
      TypeError, ValueError: both or neither of ``num_groups`` and ``group_size``, bad
        constructor arguments or ``input_shape``, ``C`` not divisible by ``group_size``;
        params of another structure; a non-float input; and
        :func:`funcnet.ops.group_norm`'s errors (``C`` not divisible by ``num_groups``,
        rank < 2), prefixed with the layer name.

    References:
      Wu & He (2018), https://arxiv.org/abs/1803.08494.
    """
    name = "GroupNorm"
    if (num_groups is None) == (group_size is None):
        raise ValueError(f"{name}: give exactly one of num_groups and group_size, got "
                         f"num_groups={num_groups!r}, group_size={group_size!r} (for "
                         f"group_size, pass num_groups=None, as in Flax)")
    if num_groups is not None:
        num_groups = _checks.static_int(name, "num_groups", num_groups, minimum=1)
    else:
        group_size = _checks.static_int(name, "group_size", group_size, minimum=1)
    return _group_layer(name, num_groups, group_size, eps, use_scale, use_bias,
                        scale_init, bias_init, dtype)


@described
def InstanceNorm(eps: float = 1e-5, *, use_scale: bool = True, use_bias: bool = True,
                 scale_init=initializers.ones, bias_init=initializers.zeros,
                 dtype=None) -> Layer:
    """Instance normalization (Ulyanov et al. 2016): each channel of each example over its
    positions, ``GroupNorm(None, group_size=1)`` (as ``flax.linen.InstanceNorm``;
    ``eps = 1e-5`` as :func:`GroupNorm`, Flax uses ``1e-6``).

    Shapes:
      input: ``(N, ..., C)``, rank >= 2 (rank 2 normalises each single value: ``y =
        beta``); output: the same shape. params: as :func:`GroupNorm`; state ``()``.

    Args:
      eps, use_scale, use_bias, scale_init, bias_init, dtype: as :func:`GroupNorm`.

    Returns:
      A :class:`Layer` named ``"InstanceNorm"``.

    Raises:
      TypeError, ValueError: as :func:`GroupNorm`.

    References:
      Ulyanov, Vedaldi & Lempitsky (2016), https://arxiv.org/abs/1607.08022.
    """
    return _group_layer("InstanceNorm", None, 1, eps, use_scale, use_bias, scale_init,
                        bias_init, dtype)
