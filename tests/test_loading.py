"""resolve_model: every way of naming a model ends in one local folder, or in an error that says
what to do instead."""
import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kvsplice.engine import loading
from kvsplice.engine.errors import ModelLoadError, UnsupportedArchitecture
from kvsplice.engine.loading import check_architecture, resolve_model


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KVSPLICE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Write a saved Qwen2 folder as an fp32 GGUF, the way llama.cpp lays one out (Qwen2 needs no
    q/k permutation), so the converted model must reproduce the original's logits."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = model.config
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"], key=tok["model"]["vocab"].get)
    special = {t["id"] for t in tok["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config.num_hidden_layers)

    writer = gguf.GGUFWriter(out, "qwen2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(vocab))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    for name, tensor in model.state_dict().items():
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_unprepared_packaged_model_names_the_prepare_command(home):
    with pytest.raises(ModelLoadError) as err:
        resolve_model("smollm2-135m")
    assert str(err.value) == "model 'smollm2-135m' is not prepared: run `kvsplice models prepare smollm2-135m`"


def test_prepared_packaged_model_resolves_to_its_folder(home, tiny_model_dir):
    folder = home / "models" / "qwen2.5-coder-0.5b"
    shutil.copytree(tiny_model_dir("qwen2"), folder)
    assert resolve_model("qwen2.5-coder-0.5b") == folder


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_model_folder_of_a_supported_family_resolves_to_itself(tiny_model_dir, arch):
    folder = tiny_model_dir(arch)
    assert resolve_model(str(folder)) == folder


def test_gpt2_folder_is_an_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(UnsupportedArchitecture) as err:
        resolve_model(str(tmp_path))
    assert all(word in str(err.value) for word in ("gpt2", "Llama", "Qwen2", "'llama'", "'qwen2'"))


def test_check_architecture_reads_config_objects_too(tiny_model_dir):
    from transformers import AutoConfig, GPT2Config

    check_architecture(AutoConfig.from_pretrained(tiny_model_dir("llama")))
    with pytest.raises(UnsupportedArchitecture, match="gpt2"):
        check_architecture(GPT2Config())


def test_folder_without_weights_says_what_is_missing(tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_text((tiny_model_dir("llama") / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="safetensors weights and tokenizer"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("name", ["/no/such/folder", "no/such/model.gguf", "not-a-model"])
def test_nonexistent_path_is_a_clear_error(name):
    with pytest.raises(ModelLoadError, match="no model") as err:
        resolve_model(name)
    assert "smollm2-135m" in str(err.value)


def test_hub_id_offline_lists_the_offline_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        resolve_model("nobody-here/no-such-coder-1b")
    message = str(err.value)
    assert "unreachable" in message and "smollm2-135m" in message
    assert "local model folder" in message and ".gguf" in message


def test_gguf_file_is_converted_once_and_matches_the_original(home, tmp_path, tiny_model_dir, monkeypatch):
    original = tiny_model_dir("qwen2")
    path = write_gguf(original, tmp_path / "tiny.gguf")

    folder = resolve_model(str(path))
    assert folder.parent == home / "gguf" and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "quantization_config" not in config
    assert config["rope_parameters"]["rope_theta"] == 1e6

    ids = AutoTokenizer.from_pretrained(original)("def f(x):\n    return x + 1\n", return_tensors="pt").input_ids
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)

    monkeypatch.setattr(loading, "convert_gguf", lambda *a: pytest.fail("converted again"))
    moved = path.rename(tmp_path / "renamed.gguf")
    assert resolve_model(str(moved)) == folder
