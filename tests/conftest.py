"""Shared fixtures. TRITON_INTERPRET must be set before anything imports triton."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from kvsplice.engine.runtime import Runtime, cpu_kernels  # noqa: E402
from tiny_models import make_tiny_model, train_tokenizer  # noqa: E402

MEASURED_ENCODE_RATE = Runtime._encode_rate
# Every test runs the CPU kernels that users get (kernels.native's C++), whichever test runs
# first; built where engines build them, so servers the tests start find them ready.
cpu_kernels()


@pytest.fixture(scope="session", autouse=True)
def default_window_independent_of_load():
    """The default window follows the encode rate measured at load, which a busy machine lowers.
    In-process engines here get a fixed rate instead (their default window is the trained
    context), so that a test's window never depends on the machine's load; tests of other windows
    ask for them, and test_window.py tests the measured default."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Runtime, "_encode_rate", lambda self, tokens=64: 1e9)
        yield


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """Factory: tiny_model_dir(arch="llama", layers=2) -> folder of a random model (cached)."""
    made = {}

    def make(arch: str = "llama", layers: int = 2):
        key = (arch, layers)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}-{layers}")
            made[key] = make_tiny_model(folder, arch, layers, tokenizer=tiny_tokenizer)
        return made[key]

    return make
