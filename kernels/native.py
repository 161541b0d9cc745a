"""The C++ CPU kernels, compiled on the user's machine the first time a CPU engine loads.

torch offers no CPU path that reads a decode step's cache at memory speed (bmm, SDPA, einsum,
16-bit caches and torch.compile were measured: README, "On a CPU"), so decode attention is
hand-written for AVX2 (decode_attention.cpp); the small ops around the int8 linears are one C++
pass each (row_ops.cpp). Built with torch's own extension builder (the machine's compiler and
ninja; about 30 s once, then cached: the engine builds under $KVSPLICE_HOME/kernels), they
register the CPU kernels of the ops that kernels/attention.py and kernels/rows.py define, so no
caller changes: where they cannot build (no compiler, no AVX2, or KVSPLICE_KERNELS=torch) the
ops keep their torch implementations, and `load` says why.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from . import attention, rows  # noqa: F401  (define the ops whose CPU kernels the library implements)
from .dispatch import requested

log = logging.getLogger(__name__)

_SOURCES = [str(Path(__file__).with_name(name)) for name in ("decode_attention.cpp", "row_ops.cpp")]
# OpenMP: at::parallel_for runs on torch's threads. No contraction into fused multiply-adds:
# row_ops.cpp gives the bits of the torch ops it replaces.
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-ffp-contract=off"]
# A build takes about 30 s; a lock older than this was left by a build that was killed (an
# editor closed mid-build), and torch would wait on it forever.
_STALE_LOCK_S = 600
_loaded: str | None = None


def load(build_root: Path) -> str:
    """Build (once per machine, under build_root) and load the C++ kernels; returns which the CPU
    runs ("avx2", or "torch (why)"), for the log."""
    global _loaded
    if _loaded is not None:
        return _loaded
    if requested() == "torch":
        return "torch (KVSPLICE_KERNELS=torch)"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        _loaded = f"torch (CPU capability {torch.backends.cpu.get_cpu_capability()}; the kernels need AVX2)"
        return _loaded
    from torch.utils import cpp_extension

    try:
        import ninja  # the wheel's binary, also when the venv's bin/ is not on PATH (an editor's spawn)
    except ImportError:  # a ninja on PATH still serves
        pass
    else:
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    try:
        build = Path(build_root) / f"torch-{torch.__version__}"
        build.mkdir(parents=True, exist_ok=True)
        lock = build / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
            lock.unlink(missing_ok=True)
        cpp_extension.load("kvsplice_cpu_kernels", _SOURCES, extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"],
                           build_directory=str(build), is_python_module=False)
    except Exception as error:  # no compiler or ninja: the torch ops still run, only slower
        log.warning("the C++ CPU kernels did not build (%s); the torch ops run instead", error)
        _loaded = f"torch (the C++ kernels did not build: {str(error).splitlines()[0][:200]})"
        return _loaded
    _loaded = "avx2"
    return _loaded
