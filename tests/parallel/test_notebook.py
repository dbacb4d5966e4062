"""tpu/funcnet_colab_tpu.ipynb runs top to bottom on CPU with 8 fake devices.

The kernel inherits this process's environment, so XLA_FLAGS (8 host devices) and a
short run (FUNCNET_NOTEBOOK_EPOCHS=2) are set with monkeypatch before it starts; the
notebook's install cell finds the editable funcnet and installs nothing.
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
    monkeypatch.setenv("XLA_FLAGS", env_with_devices(8)["XLA_FLAGS"])
    monkeypatch.setenv("FUNCNET_NOTEBOOK_EPOCHS", "2")
    monkeypatch.delenv("FUNCNET_PIP_SPEC", raising=False)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    text = _text(nb)
    assert "platform: cpu, 8 devices" in text, text
    assert "replicas identical: True" in text, text
    assert "1e-3 model same as the pmap run: True" in text, text
    losses = [float(v) for v in re.findall(r"epoch \d+: loss ([0-9.]+)", text)]
    assert len(losses) == 2 and losses[1] < losses[0] < 2.3, text
    accs = [float(v) for v in re.findall(r"test accuracy ([0-9.]+)", text)]
    assert len(accs) == 4 and accs[-1] > 0.5, text       # 4 swept learning rates
