"""Shared fixtures. TRITON_INTERPRET must be set before anything imports triton."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from tiny_models import make_tiny_model, train_tokenizer  # noqa: E402


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
