"""What a training step keeps for its backward pass, and rematerialization.

Reverse-mode autodiff stores *residuals*: the intermediate values the backward pass
reads. funcnet's hand-written backward rules keep them small (ReLU a boolean mask,
max-pool the argmax, softmax-CE the probabilities); these helpers let a user see them::

    from funcnet.nn import memory
    for r in memory.saved_residuals(loss, params, batch):
        print(r)                    # shape, dtype, bytes, where it was made
    memory.residual_bytes(loss, params, batch, include_arguments=False)

and trade compute for memory with :func:`Remat`, which recomputes a layer's forward pass
during the backward pass instead of storing its residuals (``jax.checkpoint``)::

    model = nn.serial(memory.Remat(nn.serial(nn.Dense(4096), nn.ReLU())), nn.Dense(10))

Built on JAX's ``saved_residuals`` (the function behind the public
``jax.ad_checkpoint.print_saved_residuals``): residuals are the values a ``jax.vjp`` of
``fn`` closes over, found by tracing, so nothing is computed.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from funcnet._describe import described

__all__ = ["SavedResidual", "saved_residuals", "residual_bytes", "format_residuals", "Remat"]


class SavedResidual(NamedTuple):
    """One value saved for the backward pass.

    Attributes:
      shape: the array shape.
      dtype: the numpy dtype.
      nbytes: ``prod(shape) * dtype.itemsize``.
      source: JAX's description, e.g. ``"from the argument params[0]['w']"`` or
        ``"output of gt from funcnet/ops/activations.py:23 (_relu_fwd)"``.
      is_argument: whether the value is one of ``fn``'s inputs (params, data), which are
        alive anyway, as opposed to an activation computed by the forward pass.
    """

    shape: tuple
    dtype: np.dtype
    nbytes: int
    source: str
    is_argument: bool

    def __str__(self) -> str:
        shape = ",".join(str(d) for d in self.shape)
        return f"{self.dtype.name}[{shape}] {self.nbytes:,} B {self.source}"


def _jax_saved_residuals() -> Callable:
    try:
        from jax._src.ad_checkpoint import saved_residuals as impl
    except ImportError as e:  # pragma: no cover - a JAX that moved the private function
        raise ImportError(
            "funcnet.nn.memory needs jax._src.ad_checkpoint.saved_residuals (the function "
            "behind jax.ad_checkpoint.print_saved_residuals); this JAX version lacks it"
        ) from e
    return impl


def saved_residuals(fn: Callable, *args, **kwargs) -> list[SavedResidual]:
    """The values ``jax.vjp(fn, *args, **kwargs)`` saves for the backward pass.

    Differentiation is with respect to every positional and keyword argument (as
    ``jax.vjp`` does), so pass only arrays (or pytrees of arrays); close over anything
    static. Only traces ``fn``: no array is computed.

    Args:
      fn: a function of arrays returning arrays (typically a loss).
      *args, **kwargs: example arguments (arrays or ``jax.ShapeDtypeStruct`` s).

    Returns:
      A list of :class:`SavedResidual`, arguments first, then activations in program order.

    Example:
      For ``loss(params, x) = mean(relu(x @ w))`` the list holds ``w`` and ``x`` (from
      the arguments) and the ReLU's boolean mask, not the pre-activation.
    """
    out = []
    for aval, src in _jax_saved_residuals()(fn, *args, **kwargs):
        shape = tuple(int(d) for d in aval.shape)
        dtype = np.dtype(aval.dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        out.append(SavedResidual(shape, dtype, nbytes, src, src.startswith("from the argument")))
    return out


def residual_bytes(fn: Callable, *args, include_arguments: bool = True, **kwargs) -> int:
    """Total bytes of :func:`saved_residuals`.

    Args:
      fn, *args, **kwargs: as for :func:`saved_residuals`.
      include_arguments: count the residuals that are ``fn``'s own inputs (params, data).
        ``False`` gives the activation memory that the backward pass adds.

    Returns:
      The number of bytes, an int.
    """
    return int(sum(r.nbytes for r in saved_residuals(fn, *args, **kwargs)
                   if include_arguments or not r.is_argument))


def format_residuals(records: list[SavedResidual]) -> str:
    """A table of residuals and a total line (``print_saved_residuals``'s table, plus bytes)."""
    lines = [str(r) for r in records]
    act = sum(r.nbytes for r in records if not r.is_argument)
    total = sum(r.nbytes for r in records)
    lines.append(f"total {total:,} B ({act:,} B of activations, "
                 f"{total - act:,} B of arguments)")
    return "\n".join(lines)


@described
def Remat(layer: Any, policy: Callable | None = None, *, prevent_cse: bool = True):
    """A layer that recomputes ``layer``'s forward pass in the backward pass.

    ``apply`` is wrapped in ``jax.checkpoint`` (a.k.a. ``jax.remat``): the wrapped layer
    saves only its inputs (params, state, x) instead of its internal activations, and
    runs its forward pass again when the gradient is needed. Values and gradients are
    identical to ``layer``'s; residual memory goes down and compute goes up by about one
    forward pass of ``layer``.

    Args:
      layer: a :class:`funcnet.nn.Layer` (any NamedTuple with ``init`` and ``apply``).
      policy: a ``jax.checkpoint_policies`` policy choosing what may still be saved
        (e.g. ``jax.checkpoint_policies.dots_with_no_batch_dims_saveable``); ``None``
        saves nothing inside the layer.
      prevent_cse: passed to ``jax.checkpoint`` (keep ``True`` unless the layer is inside
        ``lax.scan``, where ``False`` is safe and can be faster).

    Returns:
      A layer of the same type whose ``init`` is ``layer.init`` and whose ``apply``
      ``(params, state, x, key=None, train=False) -> (y, state)`` is rematerialized.
      ``train`` stays a static Python bool.

    Raises:
      TypeError: if ``layer`` has no ``init`` / ``apply``.

    References:
      Chen et al. (2016), "Training Deep Nets with Sublinear Memory Cost",
      https://arxiv.org/abs/1604.06174.
    """
    if not (callable(getattr(layer, "init", None)) and callable(getattr(layer, "apply", None))):
        raise TypeError(f"Remat: layer must have init and apply functions, got "
                        f"{type(layer).__name__}")

    def apply(params, state, x, *, key=None, train=False):
        def inner(params, state, x, key):
            return layer.apply(params, state, x, key=key, train=train)

        return jax.checkpoint(inner, policy=policy, prevent_cse=prevent_cse)(
            params, state, x, key)

    fields = getattr(layer, "_fields", ())
    if "name" in fields:
        # a leaf for summary(): its params are the wrapped layer's, not one per sub-layer
        repl = {"apply": apply, "name": f"Remat({layer.name})"}
        if "layers" in fields:
            repl["layers"] = ()
        return layer._replace(**repl)
    return type(layer)(layer.init, apply)
