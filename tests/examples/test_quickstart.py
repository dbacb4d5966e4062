"""The quick start in README.md (its only python block) runs as written."""
import re
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_quickstart_runs_and_learns(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(QUICKSTART.read_text())
    assert len(blocks) == 1 and "train.fit(" in blocks[0]
    monkeypatch.chdir(tmp_path)  # the checkpoint directory is relative
    namespace = {}
    exec(compile(blocks[0], str(QUICKSTART), "exec"), namespace)
    out = capsys.readouterr().out
    assert "Total params" in out and "test accuracy" in out
    assert namespace["metrics"]["accuracy"] >= 0.93
    assert namespace["manager"].all_steps() == [9, 10]
    assert (tmp_path / "runs" / "quickstart").is_dir()
