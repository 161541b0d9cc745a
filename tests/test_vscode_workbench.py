"""The VS Code extension (editors/vscode) in a real VS Code workbench: code-server serving the
.vsix built from this tree, opened in Debian's headless chromium by playwright-core, talking to a
real `kvsplice serve` with the packaged smollm2-135m on a copy of a standard-library file.

editors/vscode/e2e/workbench.mjs runs the session and reports a result per case; the tests here
assert on those results. Screenshots of each step go to editors/vscode/e2e/artifacts/ (printed,
git-ignored). The workbench is installed by editors/vscode/e2e/install.sh, which .ci/run runs;
where a tool is missing the tests skip and say which one and how to install it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sysconfig
from pathlib import Path

import pytest

from kvsplice.engine.packaged import prepare
from test_nvim_plugin import installed

ROOT = Path(__file__).resolve().parents[1]
VSCODE = ROOT / "editors" / "vscode"
E2E = VSCODE / "e2e"
ARTIFACTS = E2E / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
SOURCE = Path(sysconfig.get_paths()["stdlib"]) / "colorsys.py"
WAIT_S = 600  # the longest wait on the model: its load, the first encode, a draft

pytestmark = pytest.mark.real_model

CASES = [
    "opening_a_python_file_shows_the_model_loading",
    "typing_a_function_header_shows_ghost_text",
    "tab_inserts_the_draft_into_the_document",
    "status_bar_shows_the_cache_figures_and_the_draft_latency",
    "stats_dialog_shows_one_label_value_pair_per_line",
    "status_bar_stays_while_the_output_view_has_focus",
    "restart_stops_the_server_without_a_kill",
    "a_missing_server_path_is_reported_with_the_install_the_readme_gives",
    "the_first_encode_showed_in_the_status_bar",
]


def missing_tools() -> list[str]:
    checks = [
        (shutil.which("node"), "node (Node 20)"),
        (CHROMIUM.exists(), "chromium (apt-get install -y chromium ripgrep libkrb5-dev)"),
        ((E2E / "node_modules" / ".bin" / "code-server").exists(), "code-server (bash editors/vscode/e2e/install.sh)"),
        ((VSCODE / "node_modules" / ".bin" / "vsce").exists(), "the extension's build tools (npm --prefix editors/vscode ci)"),
    ]
    return [what for found, what in checks if not found]


@pytest.fixture(scope="module")
def workbench_results(pytestconfig, tmp_path_factory) -> dict[str, dict]:
    if missing := missing_tools():
        reason = f"VS Code workbench tests skipped: missing {'; '.join(missing)}"
        with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(f"\n{reason}")
        pytest.skip(reason)
    prepare("smollm2-135m")
    kvsplice = installed("kvsplice")
    assert kvsplice, "the kvsplice command is not installed (pip install -e .)"
    tmp = tmp_path_factory.mktemp("vscode-workbench")
    vsix = tmp / "kvsplice.vsix"
    subprocess.run(["npm", "--prefix", str(VSCODE), "run", "package", "--", "--out", str(vsix)],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    out = tmp / "results.json"
    env = {**os.environ, "KVSPLICE_E2E_VSIX": str(vsix), "KVSPLICE_E2E_SERVER": kvsplice,
           "KVSPLICE_E2E_FILE": str(SOURCE), "KVSPLICE_E2E_WORK": str(tmp / "work"),
           "KVSPLICE_E2E_ARTIFACTS": str(ARTIFACTS), "KVSPLICE_E2E_OUT": str(out),
           "KVSPLICE_E2E_WAIT_MS": str(WAIT_S * 1000)}
    # A session of its own, so that a timeout ends code-server, chromium and the server with it.
    proc = subprocess.Popen(["node", str(E2E / "workbench.mjs")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=4 * WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
    assert out.exists(), f"workbench.mjs exited {proc.returncode} without results:\n{log}"
    return {case["name"]: case for case in json.loads(out.read_text())}


def test_workbench_session_runs_every_case(workbench_results, capsys):
    with capsys.disabled():
        print(f"\nVS Code workbench screenshots: {ARTIFACTS}")
    assert sorted(workbench_results) == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_vscode_workbench(workbench_results, name):
    case = workbench_results[name]
    assert case["ok"], case["error"]
