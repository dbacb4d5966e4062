"""Looking up and replacing values of an optimizer state by name, optax's
``tree.get_all_with_path``, ``tree.get``, ``tree.set`` and ``tree_utils.NamedTupleKey``.

A name matches a dict key, a NamedTuple field or a NamedTuple's class name. Paths are
``jax.tree_util`` key paths in which each NamedTuple field is a :class:`NamedTupleKey`
(``"ScaleByAdamState.count"``), so two fields of the same name in different states can
be told apart by a ``filtering(path, value) -> bool``. Public through
:mod:`funcnet.optim.tree`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax

__all__ = ["NamedTupleKey", "get_all_with_path", "get", "set"]


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """The path entry of a NamedTuple's field, optax's ``tree_utils.NamedTupleKey``.

    Attributes:
      tuple_name: the NamedTuple's class name.
      name: the field's name.
    """
    tuple_name: str
    name: str

    def __str__(self):
        return f"{self.tuple_name}.{self.name}"


def _is_named_tuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _has_keys(node, keys) -> bool:
    """``node`` is a NamedTuple with one of ``keys`` as field or class name, or a dict
    with one of them as key."""
    if _is_named_tuple(node):
        return any(k in node._fields or k == type(node).__name__ for k in keys)
    return isinstance(node, dict) and any(k in node for k in keys)


def _children(path, node):
    """(path, child) of a NamedTuple's fields or a dict's items."""
    if _is_named_tuple(node):
        return [((*path, NamedTupleKey(type(node).__name__, f)), getattr(node, f))
                for f in node._fields]
    return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]


def _leaves_with_path(tree, is_leaf=None):
    """``jax.tree_util.tree_leaves_with_path`` with :class:`NamedTupleKey` entries for
    NamedTuple fields; stops at the nodes where ``is_leaf`` holds."""
    stop = is_leaf or (lambda _: False)
    out = []
    for path, node in jax.tree_util.tree_leaves_with_path(
            tree, is_leaf=lambda x: stop(x) or _is_named_tuple(x)):
        if stop(node) or not _is_named_tuple(node):
            out.append((path, node))
            continue
        for child_path, child in _children(path, node):
            out += [((*child_path, *p), v) for p, v in _leaves_with_path(child, is_leaf)]
    return out


def _found(tree, key):
    """All (path, value) matching ``key``, outer ones first, then those inside them."""
    has = lambda n: _has_keys(n, (key,))  # noqa: E731
    nodes = [(p, n) for p, n in _leaves_with_path(tree, is_leaf=has) if has(n)]
    found = []
    for path, node in nodes:
        if _is_named_tuple(node) and key == type(node).__name__:
            found.append((path, node))
        elif _is_named_tuple(node):
            found.append(((*path, NamedTupleKey(type(node).__name__, key)),
                          getattr(node, key)))
        else:
            found.append(((*path, jax.tree_util.DictKey(key)), node[key]))
    for path, node in nodes:
        for child_path, child in _children(path, node):
            found += [((*child_path, *p), v) for p, v in _found(child, key)]
    return found


def get_all_with_path(tree: Any, key: Any,
                      filtering: Optional[Callable[[tuple, Any], bool]] = None):
    """Every value of ``tree`` named ``key`` with its path, optax's
    ``tree.get_all_with_path``.

    Args:
      tree: a pytree (an optimizer state).
      key: a dict key, NamedTuple field name or NamedTuple class name.
      filtering: optional ``filtering(path, value) -> bool`` keeping some matches.

    Returns:
      A list of ``(path, value)``; ``jax.tree_util.keystr(path)`` prints a path.
    """
    found = _found(tree, key)
    return [(p, v) for p, v in found if filtering(p, v)] if filtering else found


def get(tree: Any, key: Any, default: Optional[Any] = None,
        filtering: Optional[Callable[[tuple, Any], bool]] = None) -> Any:
    """The value of ``tree`` named ``key`` (e.g. ``get(opt_state, "count")``), optax's
    ``tree.get``.

    Args:
      tree: a pytree (an optimizer state).
      key: a dict key, NamedTuple field name or NamedTuple class name.
      default: returned when nothing matches.
      filtering: optional ``filtering(path, value) -> bool`` keeping some matches.

    Returns:
      The one matching value, or ``default``.

    Raises:
      KeyError: several values match (narrow them with ``filtering``).
    """
    found = get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        paths = ", ".join(jax.tree_util.keystr(p) for p, _ in found)
        raise KeyError(f"get: found multiple values for '{key}' (at {paths}); "
                       f"pass filtering= to choose one")
    return found[0][1] if found else default


def set(tree: Any, filtering: Optional[Callable[[tuple, Any], bool]] = None,  # noqa: A001
        /, **kwargs: Any) -> Any:
    """A copy of ``tree`` with the values named by ``kwargs`` replaced (e.g.
    ``set(opt_state, count=jnp.asarray(10))``), optax's ``tree.set``.

    Args:
      tree: a pytree (an optimizer state).
      filtering: optional ``filtering(path, value) -> bool``: only matches for which it
        holds are replaced.
      **kwargs: name=new value; a name is a dict key, NamedTuple field or class name.

    Returns:
      A tree of ``tree``'s structure (above the replaced values).

    Raises:
      KeyError: a name of ``kwargs`` matches nothing (after ``filtering``).
    """
    for key in kwargs:
        if not get_all_with_path(tree, key, filtering):
            extra = " given the filtering operation" if filtering else ""
            raise KeyError(f"set: found no values matching '{key}'{extra} in the tree")
    keys = tuple(kwargs)
    has = lambda n: _has_keys(n, keys)  # noqa: E731
    wanted = lambda p, v: filtering is None or filtering(p, v)  # noqa: E731

    def replace(path, node):
        if not has(node):
            return node
        if _is_named_tuple(node) and type(node).__name__ in kwargs and wanted(path, node):
            return kwargs[type(node).__name__]
        new = {}
        for child_path, child in _children(path, node):
            entry = child_path[-1]
            name = entry.name if isinstance(entry, NamedTupleKey) else entry.key
            if name in kwargs and wanted(child_path, child):
                new[name] = kwargs[name]
            elif isinstance(child, (dict, list, tuple)):
                new[name] = replace(child_path, child)
            else:
                new[name] = child
        return node._replace(**new) if _is_named_tuple(node) else new

    treedef = jax.tree_util.tree_structure(tree, is_leaf=has)
    return treedef.unflatten([replace(p, n) for p, n in _leaves_with_path(tree, is_leaf=has)])
