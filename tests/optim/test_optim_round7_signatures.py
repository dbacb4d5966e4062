"""This stop's optax names (DP-SGD, GaLore, the complex-valued wrapper, micro_vmap /
micro_grad, ctc_loss): the same parameters in the same order, kinds and defaults as
optax 0.2.8's, and the same state fields."""
import inspect

import pytest

import funcnet.optim as optim
from funcnet import ops
from funcnet.optim import microbatching

optax = pytest.importorskip("optax")
contrib = pytest.importorskip("optax.contrib")


def _sig(f):
    """(name, kind, default) per parameter; a function default (micro_grad's
    ``transform_fn``) as "a function", an enum default by its name."""
    def default(d):
        if callable(d) and getattr(d, "__name__", "") == "<lambda>":
            return "a function"
        return getattr(d, "name", d) if hasattr(d, "value") else d
    return [(p.name, p.kind, default(p.default))
            for p in inspect.signature(f).parameters.values()]


@pytest.mark.parametrize("ours, theirs", [
    (optim.dpsgd, contrib.dpsgd),
    (optim.differentially_private_aggregate, contrib.differentially_private_aggregate),
    (optim.galore, contrib.galore),
    (optim.scale_by_galore, contrib.scale_by_galore),
    (optim.split_real_and_imaginary, contrib.split_real_and_imaginary),
    (microbatching.micro_grad, optax.microbatching.micro_grad),
    (microbatching.micro_vmap, optax.microbatching.micro_vmap),
    (ops.ctc_loss, optax.losses.ctc_loss),
], ids=lambda f: getattr(f, "__name__", ""))
def test_signatures_are_optax(ours, theirs):
    assert _sig(ours) == _sig(theirs)


@pytest.mark.parametrize("name", ["DifferentiallyPrivateAggregateState", "GaLoreState",
                                  "GaLoreDimensionNumbers", "SplitRealAndImaginaryState",
                                  "SplitRealAndImaginaryArrays"])
def test_state_fields_are_optax(name):
    from optax.contrib import _complex_valued     # optax exports only the state class
    ours = getattr(optim, name)
    theirs = getattr(contrib, name, None) or getattr(_complex_valued, name)
    assert ours._fields == theirs._fields
    assert ours._field_defaults == theirs._field_defaults
    assert name in optim.__all__
