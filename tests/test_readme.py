"""The README's quickstart (its first ``python`` block) runs as written and does what its
comments say: the summary prints, the test accuracy is about 0.97, the checkpoint
directory keeps the last two epochs, and a rerun resumes instead of training again."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart() -> str:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md has no python block"
    return block.group(1)


def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                   # runs/quickstart is relative
    code = compile(quickstart(), "README.md quickstart", "exec")
    first = {}
    exec(code, first)
    out = capsys.readouterr().out
    assert "Dense(128)" in out and "test accuracy" in out
    assert first["metrics"]["accuracy"] > 0.93    # the comment says ~0.97
    assert first["manager"].all_steps() == [9, 10]
    assert (tmp_path / "runs" / "quickstart").is_dir()
    assert first["history"]["epoch"] == list(range(1, 11))
    again = {}
    exec(code, again)                             # "a rerun resumes"
    assert "fit: nothing to train: checkpoint at epoch 10 of 10" in capsys.readouterr().out
    assert again["metrics"] == first["metrics"]
