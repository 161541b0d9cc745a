"""KVSPLICE_KERNELS picks the backend per call; asking for Triton where it cannot run says why."""
import pytest
import torch

from kvsplice.kernels import dispatch, rerotate_
from kvsplice.kernels import rotary

CPU = torch.zeros(1)


def test_auto_uses_the_torch_reference_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("KVSPLICE_KERNELS", raising=False)
    assert not dispatch.use_triton(CPU)
    monkeypatch.setenv("KVSPLICE_KERNELS", "auto")
    assert not dispatch.use_triton(CPU)


def test_torch_forces_the_reference_and_values_are_case_insensitive(monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "Torch")
    assert not dispatch.use_triton(CPU)


def test_triton_runs_interpreted_kernels_on_cpu(monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "triton")
    assert dispatch.use_triton(CPU)
    launched = []
    monkeypatch.setattr(rotary, "rotate_and_move_triton_", lambda *args: launched.append(args))
    rerotate_(torch.zeros(1, 1, 4, 8), 0, 4, 1, torch.ones(4))
    assert len(launched) == 1


def test_triton_without_a_gpu_or_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "triton")
    monkeypatch.setattr(dispatch, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        dispatch.use_triton(CPU)


def test_triton_requested_but_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "triton")
    monkeypatch.setattr(dispatch, "triton", None)
    with pytest.raises(RuntimeError, match="does not import"):
        dispatch.use_triton(CPU)
    monkeypatch.setenv("KVSPLICE_KERNELS", "auto")
    assert not dispatch.use_triton(CPU)


def test_unknown_backend_is_rejected(monkeypatch):
    monkeypatch.setenv("KVSPLICE_KERNELS", "cuda")
    with pytest.raises(ValueError, match="auto, triton, torch"):
        dispatch.use_triton(CPU)
