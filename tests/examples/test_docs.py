"""What the user documentation names exists: public names, test references, paths, options.

The README, ``docs/*.md``, ``examples/README.md`` and ``tpu/README.md`` point the reader at
``funcnet.<package>.<name>`` objects, at tests (``test_file.py::test_name``, a bare
``::test_name`` meaning the file named last in the same paragraph or table), at files of
the repository, and at command-line options of the scripts. Each of these is checked
here without running anything heavy (the scripts only parse ``--help``).
"""
import contextlib
import importlib
import io
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/formulas.md", "docs/training.md", "docs/parallel.md",
        "docs/reliability.md", "examples/README.md", "tpu/README.md"]
PACKAGES = ("ops", "nn", "optim", "train", "data", "parallel", "checkpoint", "gradcheck")
# named on purpose although funcnet has no such object: Flax's module class in the
# comparison table, and the README's note that this step is gone
NOT_OURS = {"nn.Module", "parallel.data_parallel_step"}
GENERATED = ("examples/out",)           # written by the scripts, not in the repository


def _text(doc):
    return (ROOT / doc).read_text()


def _paragraphs(text):
    return re.split(r"\n\s*\n", text)


@pytest.mark.parametrize("doc", DOCS)
def test_every_funcnet_name_in_the_docs_exists(doc):
    missing = []
    for m in re.finditer(rf"(?<![\w.])(?:funcnet\.)?({'|'.join(PACKAGES)})\.((?:\w+\.)*\w+)",
                         _text(doc)):
        package, path = m.groups()
        if path == "md" or f"{package}.{path}" in NOT_OURS:
            continue                     # "parallel.md" is a file
        obj = importlib.import_module(f"funcnet.{package}")
        for part in path.split("."):
            if not hasattr(obj, part):
                missing.append(f"{package}.{path}")
                break
            obj = getattr(obj, part)
    assert not missing, f"{doc} names what funcnet does not have: {sorted(set(missing))}"


def _test_files():
    files = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        files.setdefault(path.name, []).append(path)
    return files


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_the_docs_cite_exists(doc):
    files, missing = _test_files(), []
    for paragraph in _paragraphs(_text(doc)):
        last = None
        for m in re.finditer(r"([\w/]*test_\w+\.py)?::\s*(test_\w+)|([\w/]*test_\w+\.py)",
                             paragraph):
            if m.group(3):
                last = m.group(3)
                continue
            cited, name = m.group(1) or last, m.group(2)
            if cited is None:
                missing.append(f"::{name} (no file named before it)")
                continue
            last = cited
            candidates = [p for p in files.get(Path(cited).name, [])
                          if str(p.relative_to(ROOT)).endswith(cited)]
            if not any(re.search(rf"^\s*def {name}\(", p.read_text(), re.M)
                       for p in candidates):
                missing.append(f"{cited}::{name}")
    assert not missing, f"{doc} cites tests that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_in_the_docs_exists(doc):
    missing = []
    for m in re.finditer(r"(?<![\w/.<-])((?:funcnet|tests|benchmarks|examples|tpu|docs|\.ci)"
                         r"/[\w./-]*\w)", _text(doc)):
        path = m.group(1)
        if not path.startswith(GENERATED) and not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{doc} names files that do not exist: {sorted(set(missing))}"


def _help(script, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(script.parent))
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    return out.getvalue()


EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_takes_the_options_its_readme_promises(script, monkeypatch):
    """examples/README.md: every script accepts --quick, --out and --seed (and uses the
    seed), and is listed there."""
    options = _help(script, monkeypatch)
    assert all(o in options for o in ("--quick", "--out", "--seed")), options
    assert "args.seed" in script.read_text(), f"{script.name} ignores --seed"
    assert f"`{script.name}`" in _text("examples/README.md")


def test_pod_script_takes_every_option_its_readme_lists(monkeypatch):
    readme = _text("tpu/README.md").split("## `pod_train.py`")[1]
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)        # gcloud's options are not ours
    named = {o for span in re.findall(r"`([^`]+)`", prose)
             for o in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", span)}
    options = _help(ROOT / "tpu" / "pod_train.py", monkeypatch)
    assert named and not {o for o in named if o not in options}, sorted(named)
