"""tpu/funcnet_colab_tpu.ipynb runs top to bottom on CPU with 8 fake devices.

The kernel inherits this process's environment, so XLA_FLAGS (8 host devices) and a
short run (FUNCNET_NOTEBOOK_EPOCHS=2) are set with monkeypatch before it starts; funcnet
is importable from the repository root (the kernel's working directory), so the install
cell installs nothing and finds the checkout's examples/ for section 6 (the transformer,
in its small CPU configuration). The checks follow the expected outputs the notebook states.
"""
import math
import re

import pytest

from tests.parallel._helpers import ROOT, env_with_devices

NOTEBOOK = ROOT / "tpu" / "funcnet_colab_tpu.ipynb"


def _outputs(cell):
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                   for o in cell.get("outputs", []))


def _transformer_parameters(width, depth, vocab=128, seq_len=32):
    """Parameters of examples/char_transformer.build_model, counted by hand."""
    dense = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    norm = 2 * width
    block = norm + 4 * dense(width, width) + norm + dense(width, 4 * width) \
        + dense(4 * width, width)
    return vocab * width + seq_len * width + depth * block + norm + dense(width, vocab)


@pytest.mark.multiprocess
def test_colab_notebook_runs_on_eight_cpu_devices(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
    sources = [c.source for c in nb.cells]
    assert not any("reserved" in s.lower() for s in sources)     # section 6 is filled in
    monkeypatch.setenv("XLA_FLAGS", env_with_devices(8)["XLA_FLAGS"])
    monkeypatch.setenv("FUNCNET_NOTEBOOK_EPOCHS", "2")
    monkeypatch.delenv("FUNCNET_SOURCE", raising=False)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    six = next(i for i, s in enumerate(sources) if s.startswith("## 6."))
    text = "\n".join(_outputs(c) for c in nb.cells[:six])                  # sections 1-5
    lm = "\n".join(_outputs(c) for c in nb.cells[six:])                    # section 6

    assert "funcnet 0.2.0 is importable" in text, text
    assert "platform: cpu, 8 devices, kind: cpu" in text, text
    assert "ids: [0, 1, 2, 3, 4, 5, 6, 7]" in text, text
    assert "parameters: 13,890" in text, text
    losses = [float(v) for v in re.findall(r"epoch \d+/2  loss ([0-9.]+)", text)]
    assert len(losses) == 2 and losses[1] < losses[0] < 2.3, text   # fit's progress lines
    assert "params replicated on all 8 devices: True" in text, text
    assert "replicas identical: True" in text, text
    diffs = [float(v) for v in re.findall(r"largest difference ([0-9.e+-]+)", text)]
    assert len(diffs) == 2 and max(diffs) < 1e-5, text       # one device; vmap-in-pmap
    accs = [float(v) for v in re.findall(r"test accuracy ([0-9.]+)", text)]
    assert len(accs) == 5 and accs[-1] > 0.5, text           # fit + 4 swept learning rates

    # section 6: the small CPU configuration of the transformer, trained with fit(mesh=)
    assert (f"width 32, 1 block of 2 heads, 32-character windows: "
            f"{_transformer_parameters(32, 1):,} parameters") in lm, lm
    windows = (20_000 - 1) // 32                              # targets shifted by one
    train = int(0.9 * windows)
    assert (f"corpus: 20,000 characters, {train:,} training and {windows - train:,} test "
            f"windows") in lm, lm
    assert f"global batch 16 (2 per device), {train // 16} steps per epoch, 2 epochs" in lm
    lm_losses = [float(v) for v in re.findall(r"epoch \d+/2  loss ([0-9.]+)", lm)]
    assert len(lm_losses) == 2 and lm_losses[1] < lm_losses[0], lm
    assert lm_losses[1] < math.log(128), lm                   # better than a uniform guess
    bits = [float(v) for v in re.findall(r"test: ([0-9.]+) bits per character", lm)]
    assert len(bits) == 1 and bits[0] < 5.0, lm               # uniform: 7 bits
    sampled = next(_outputs(c) for c in nb.cells[six:] if "ct.sample(" in c.source)
    sample = sampled.split("sample:\n", 1)[1][:-1]             # less print's newline
    assert sample.startswith("def ") and len(sample) == 4 + 40 and sample.isascii(), lm
