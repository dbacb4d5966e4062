"""Every ``>>>`` example in funcnet's docstrings runs and prints what it shows."""
import doctest
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "funcnet").rglob("*.py") if ">>>" in p.read_text(encoding="utf-8"))


def test_the_modules_with_examples_are_found():
    assert "funcnet.gradcheck" in MODULES and "funcnet.optim.schedules" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name}: no example ran"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
