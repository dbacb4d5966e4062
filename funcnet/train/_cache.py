"""A least-recently-used cache of compiled functions, keyed on the user's objects.

``functools.lru_cache`` needs hashable arguments; a loss or metrics function may be an
unhashable callable object (a ``@dataclass`` with ``eq=True``, a list-holding class). Such an
argument is keyed by identity instead: the same object hits the cache, an equal copy
compiles again (as ``jax.jit`` treats a static argument it cannot hash).
"""
from __future__ import annotations

import functools
from typing import Callable

__all__ = ["compile_cache"]


class _ByIdentity:
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ByIdentity) and other.obj is self.obj


def _key(arg):
    try:
        hash(arg)
    except TypeError:
        return _ByIdentity(arg)
    return arg


def _unkey(arg):
    return arg.obj if isinstance(arg, _ByIdentity) else arg


def compile_cache(maxsize: int) -> Callable:
    """``functools.lru_cache(maxsize)`` for positional arguments that may be unhashable."""
    def decorate(f):
        cached = functools.lru_cache(maxsize=maxsize)(lambda *keys: f(*map(_unkey, keys)))

        @functools.wraps(f)
        def wrapper(*args):
            return cached(*map(_key, args))

        wrapper.cache_clear, wrapper.cache_info = cached.cache_clear, cached.cache_info
        return wrapper
    return decorate
