"""EpochProgress: tqdm on a terminal, plain lines otherwise or without tqdm, silence."""
import sys

import pytest

from funcnet.train.progress import EpochProgress, format_metrics

LOGS = {"loss": 0.5, "accuracy": 0.875, "eval_accuracy": 0.9}


def test_log_lines_when_not_a_terminal(capsys):
    bar = EpochProgress(12, start=2)
    bar.update(3, LOGS, 0.25)
    bar.close()
    assert capsys.readouterr().out == ("epoch  3/12  loss 0.5000  accuracy 0.8750  "
                                       "eval_accuracy 0.9000  0.25 s\n")


def test_tqdm_bar_on_a_terminal(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    bar = EpochProgress(4)
    assert bar._bar is not None
    bar.update(1, LOGS, 0.1)
    bar.close()
    captured = capsys.readouterr()
    assert "epoch 1/4" not in captured.out  # no plain line
    assert "loss 0.5000" in captured.err  # tqdm writes its bar to stderr


def test_falls_back_to_lines_without_tqdm(capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    bar = EpochProgress(2)
    bar.update(2, {"loss": 1.0}, 1.0)
    assert capsys.readouterr().out == "epoch 2/2  loss 1.0000  1.00 s\n"


def test_disabled_prints_nothing(capsys):
    bar = EpochProgress(3, enabled=False)
    bar.update(1, LOGS, 0.1)
    bar.close()
    assert capsys.readouterr() == ("", "")
    assert format_metrics({"epoch_time": 3.0}) == ""


def test_every_log_entry_is_shown_and_notes_are_lines(capsys):
    bar = EpochProgress(3)
    bar.note("fit: resumed at epoch 1 of 3")
    bar.update(2, {"loss": 0.5, "mae": 0.25, "learning_rate": 3e-4, "epoch_time": 1.0}, 1.0)
    assert capsys.readouterr().out == ("fit: resumed at epoch 1 of 3\n"
                                       "epoch 2/3  loss 0.5000  mae 0.2500  "
                                       "learning_rate 0.0003  1.00 s\n")
    EpochProgress(3, enabled=False).note("hidden")
    assert capsys.readouterr().out == ""
