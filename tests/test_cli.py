"""The `kvsplice` command line: drafts from a file, clear failures, subcommand routing."""
import sys
import sysconfig
import types
from pathlib import Path

import pytest

from kvsplice.server import cli

REAL = Path(sysconfig.get_paths()["stdlib"], "colorsys.py")


@pytest.fixture
def source(tmp_path):
    """The first 45 lines of a real file, ending inside rgb_to_yiq."""
    path = tmp_path / "colorsys_head.py"
    path.write_text("".join(REAL.read_text().splitlines(keepends=True)[:45]))
    return path


def test_complete_prints_drafts_for_a_one_based_cursor(source, tiny_model_dir, capsys):
    code = cli.main(["complete", str(source), "--line", "41", "--col", "9", "--drafts", "2",
                     "--max-new-tokens", "6", "--model", str(tiny_model_dir())])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("--- draft 1 ---\n") and "--- draft 2 ---\n" in out


def test_non_utf8_file_is_refused_with_exit_1(tmp_path, capsys):
    path = tmp_path / "latin1.py"
    path.write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    assert cli.main(["complete", str(path), "--line", "1", "--col", "1"]) == 1
    assert "is not UTF-8 text (byte 0xe9 at offset 8)" in capsys.readouterr().err


@pytest.mark.parametrize("line, col", [(47, 1), (1, 999), (0, 1)])  # line 46: empty, after the last newline
def test_cursor_outside_the_file_is_refused_with_exit_1(source, line, col, capsys):
    assert cli.main(["complete", str(source), "--line", str(line), "--col", str(col)]) == 1
    assert "is not in" in capsys.readouterr().err


def test_missing_model_prints_the_load_error_with_exit_1(source, tmp_path, capsys):
    assert cli.main(["complete", str(source), "--line", "1", "--col", "1", "--model", str(tmp_path / "none")]) == 1
    assert "no model" in capsys.readouterr().err


def test_models_list_names_the_packaged_models(capsys):
    assert cli.main(["models", "list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


def test_bench_passes_its_remaining_arguments_to_the_suite(monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, "kvsplice.bench.kernels", types.SimpleNamespace(main=seen.append))
    assert cli.main(["bench", "kernels", "--sizes", "1,2", "--json", "x"]) == 0
    assert seen == [["--sizes", "1,2", "--json", "x"]]


def test_serve_refuses_a_malformed_tcp_address(capsys):
    assert cli.main(["serve", "--tcp", "localhost"]) == 1
    assert "HOST:PORT" in capsys.readouterr().err
