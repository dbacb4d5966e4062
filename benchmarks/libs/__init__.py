"""One module per library, each exposing the same small interface.

JAX libraries (``funcnet_impl``, ``jax_impl``, ``flax_impl``, ``equinox_impl``)::

    NAME: str                       # label in the results
    versions() -> dict[str, str]    # package versions (raises ImportError if missing)
    build(case) -> JaxBuild

The runner jits ``build.step`` (per-step dispatch from Python) and wraps it in
``lax.scan`` over ``case.scan_length`` stacked batches (scan mode); both donate the state.

PyTorch (``torch_impl``)::

    build(case, compile: bool) -> TorchBuild

Libraries that are not installed raise ``ImportError`` from ``versions()`` and are skipped.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

LIBRARIES = ("funcnet", "jax", "flax", "equinox", "torch")


class JaxBuild(NamedTuple):
    """A JAX training step ready to be jitted.

    Attributes:
      step: pure ``step(state, batch) -> (state, loss)``: one Adam step.
      state: initial state pytree (arrays only): params and optimizer state.
      loss: pure ``loss(params, batch) -> scalar`` (used to count saved residuals).
      params: the params pytree that ``loss`` takes.
      prepare: ``prepare(x, y) -> batch`` turns numpy float32 inputs in funcnet's layout
        (leading axes allowed, e.g. a stack of batches) into this library's batch pytree
        (dtype cast, layout change).
    """

    step: Callable
    state: Any
    loss: Callable
    params: Any
    prepare: Callable


class TorchBuild(NamedTuple):
    """A PyTorch training step.

    Attributes:
      step: ``step(x, y) -> loss tensor``: one Adam step (zero_grad, forward, backward,
        optimizer step).
      prepare: ``prepare(x, y) -> (x, y)`` numpy -> tensors on the device, this library's
        layout and dtype.
      residual_bytes: ``residual_bytes(x, y) -> int | None``: bytes of the activation
        tensors autograd saves for the backward pass (params and inputs excluded).
      device: the torch device string.
      sync: waits for the device (no-op on CPU).
    """

    step: Callable
    prepare: Callable
    residual_bytes: Callable
    device: str
    sync: Callable


def optax_protocol_build(loss: Callable, params, opt, apply_updates: Callable,
                         prepare: Callable) -> JaxBuild:
    """The Adam step shared by every library with optax's protocol (funcnet, Flax, Equinox).

    ``opt`` has ``init``/``update(grads, state, params)``; ``apply_updates`` is the
    library's own (``funcnet.optim``, ``optax`` or ``eqx``).
    """
    import jax

    def step(state, batch):
        p, opt_state = state
        value, grads = jax.value_and_grad(loss)(p, batch)
        updates, opt_state = opt.update(grads, opt_state, p)
        return (apply_updates(p, updates), opt_state), value

    return JaxBuild(step, (params, opt.init(params)), loss, params, prepare)


def load(name: str):
    """Import ``benchmarks.libs.<name>_impl``."""
    return importlib.import_module(f"benchmarks.libs.{name}_impl")
