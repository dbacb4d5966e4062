"""tpu/funcnet_colab_tpu.ipynb runs top to bottom on CPU with 8 fake devices.

The kernel inherits this process's environment, so XLA_FLAGS (8 host devices) and a
short run (FUNCNET_NOTEBOOK_EPOCHS=2) are set with monkeypatch before it starts; funcnet
is importable from the repository root (the kernel's working directory), so the install
cell installs nothing. The checks follow the expected outputs the notebook states.
"""
import re

import pytest

from tests.parallel._helpers import ROOT, env_with_devices

NOTEBOOK = ROOT / "tpu" / "funcnet_colab_tpu.ipynb"


def _text(nb):
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.mark.multiprocess
def test_colab_notebook_runs_on_eight_cpu_devices(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
    assert "SECTION 6 (reserved for the lead)" in "".join(c.source for c in nb.cells)
    monkeypatch.setenv("XLA_FLAGS", env_with_devices(8)["XLA_FLAGS"])
    monkeypatch.setenv("FUNCNET_NOTEBOOK_EPOCHS", "2")
    monkeypatch.delenv("FUNCNET_SOURCE", raising=False)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    text = _text(nb)
    assert "funcnet 0.1.0 is importable" in text, text
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
