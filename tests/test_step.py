"""The int8 layer stack in one TorchScript call (engine/step.py) computes what the Python layers
compute, bit for bit, for every shape of forward the engine runs, and stays interruptible."""
import pytest
import torch

from kvsplice.engine import Engine
from kvsplice.engine.errors import Cancelled
from kvsplice.engine.model import Segment


def run(model, cache, ids, segments, path, interrupt=None):
    """One forward on a copy of `cache` through the stack or (int8 set aside) the Python layers."""
    k, v = (c.clone() for c in cache)
    positions = torch.cat([torch.arange(g.chunk_end - g.rows, g.chunk_end) for g in segments]) + 3
    int8 = model.int8
    if path == "python":
        model.int8 = None
    try:
        logits = model.forward(ids, positions, segments, k, v, logits_rows=len(ids), interrupt=interrupt)
    finally:
        model.int8 = int8
    return logits, k, v


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request, tiny_model_dir):
    model = Engine.load(tiny_model_dir(request.param, layers=3), quant="int8").model
    torch.manual_seed(1)
    for layer in model.layers:
        if layer.qkv.bias is not None:  # qwen2's qkv bias: saved as zeros, made to matter here
            layer.qkv.bias.normal_()
    return model


@pytest.fixture
def cache(model):
    s = model.shape
    torch.manual_seed(0)
    return (torch.randn(s.layers, s.kv_heads, 160, s.head_dim), torch.randn(s.layers, s.kv_heads, 160, s.head_dim))


@pytest.mark.parametrize("segments", [
    [Segment.in_place(0, 40)],  # prefill from the start (SDPA)
    [Segment(40, 40, 41, 1, 60)],  # one decode row reading keys to the end of its region
    [Segment(40, 40, 44, 4, 60), Segment(40, 60, 63, 3, 80)],  # two drafts with speculative rows
    [Segment(30, 100, 130, 30, 130), Segment.in_place(130, 135)],  # a draft's scratch chunk, then more
])
def test_the_stack_gives_the_python_layers_bits(model, cache, segments):
    ids = torch.randint(0, model.shape.vocab, (sum(g.rows for g in segments),))
    stack, python = run(model, cache, ids, segments, "stack"), run(model, cache, ids, segments, "python")
    for a, b in zip(stack, python):
        assert torch.equal(a, b)
    assert not torch.equal(stack[1], cache[0]), "the rows' keys were written"


def test_an_interrupted_stack_stops_between_layers_and_an_uninterrupted_one_matches(model, cache):
    segments = [Segment.in_place(0, 24)]
    ids = torch.randint(0, model.shape.vocab, (24,))
    asked = []

    def after_two_layers():
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(Cancelled, match="before layer 2"):
        run(model, cache, ids, segments, "stack", after_two_layers)
    done = run(model, cache, ids, segments, "stack", lambda: False)
    for a, b in zip(done, run(model, cache, ids, segments, "python")):
        assert torch.equal(a, b)
