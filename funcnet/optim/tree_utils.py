"""optax's older ``optax.tree_utils`` names: ``tree_<name>`` is :mod:`funcnet.optim.tree`'s
``<name>`` (the same function object), plus :class:`NamedTupleKey` and optax's deprecated
``tree_scalar_mul``, ``tree_add_scalar_mul``, ``tree_l1_norm``, ``tree_l2_norm`` and
``tree_linf_norm`` (optax warns and forwards; these forward)."""
import functools

from funcnet.optim import tree as _tree
from funcnet.optim.tree_state import NamedTupleKey

globals().update({f"tree_{name}": getattr(_tree, name) for name in _tree.__all__})

__all__ = ["NamedTupleKey", *(f"tree_{name}" for name in _tree.__all__)]

tree_scalar_mul = _tree.scale
tree_add_scalar_mul = _tree.add_scale
tree_l1_norm = functools.partial(_tree.norm, ord=1)
tree_l2_norm = functools.partial(_tree.norm, ord=2)
tree_linf_norm = functools.partial(_tree.norm, ord="inf")
