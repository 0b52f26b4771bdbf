"""The command line: every subcommand documents itself with an example; user errors exit 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from resnorm import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"resnorm {command}" in out and "example" in out.lower()


def test_python_dash_m_resnorm_works():
    result = subprocess.run([sys.executable, "-m", "resnorm", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("resnorm ")


def test_user_error_is_one_line_on_stderr_with_exit_code_2(tmp_path, capsys):
    code = cli.main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["train", "study"])
def test_help_lists_the_exit_codes_the_command_returns(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "2 invalid settings" in out or "2 for a bad plan" in out
    assert "4 out of a resource" in out


def test_out_of_memory_is_one_line_with_exit_code_4(monkeypatch, capsys):
    import resnorm.train.cli as train_cli

    def oom(args):
        raise MemoryError()
    monkeypatch.setattr(train_cli, "run_cli", oom)
    assert cli.main(["train", "--out", "x"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory" in err
