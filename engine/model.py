"""The engine's own compact Llama/Qwen2 forward, over a KV cache it owns.

Every forward takes explicit positions and says, per segment, which cache slots its rows write
and which keys they see (`kernels.attention`'s prefix + causal chunk). The caller owns where
tokens sit; that is what makes a splice, a refresh and a draft in scratch slots the same call.
transformers is used only to read the config and weights; its forward is the test oracle.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from kvsplice import kernels

from .errors import Cancelled, ModelLoadError, UnsupportedArchitecture
from .linear import Dense, Int8, make_linear
from .step import Dims, int8_layers, rms_norm, run_layers

SUPPORTED = ("llama", "qwen2")


@dataclass(frozen=True)
class Shape:
    """What the forward needs to know of a model; absorbs config-name quirks once."""

    model_type: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    tied: bool
    max_positions: int  # the trained context: no position may reach it

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "Shape":
        if config.model_type not in SUPPORTED:
            raise UnsupportedArchitecture(
                f"unsupported architecture {config.model_type!r}: kvsplice runs the Llama and Qwen2 "
                f"families ({', '.join(SUPPORTED)})"
            )
        return cls(
            model_type=config.model_type,
            vocab=config.vocab_size,
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads or config.num_attention_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            eps=config.rms_norm_eps,
            tied=bool(config.tie_word_embeddings),
            max_positions=config.max_position_embeddings,
        )


def rope_inv_freq(config: PretrainedConfig) -> torch.Tensor:
    """Inverse frequencies with the model's theta and scaling type (fp32)."""
    params = config.rope_parameters
    kind = params.get("rope_type", "default")
    if kind == "default":
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 1.0 / (params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if kind not in ROPE_INIT_FUNCTIONS or kind == "dynamic":
        raise UnsupportedArchitecture(f"unsupported RoPE type {kind!r}")
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[kind](config)
    if scaling != 1.0:
        raise UnsupportedArchitecture(f"RoPE type {kind!r} with attention scaling {scaling} is not supported")
    return inv_freq.to(torch.float32)


Linear = Dense | Int8


@dataclass
class Layer:
    norm1: torch.Tensor
    qkv: Linear
    o: Linear
    norm2: torch.Tensor
    gate_up: Linear
    down: Linear


@dataclass(frozen=True)
class Segment:
    """Rows of one forward that sit in cache slots [chunk_end - rows, chunk_end) and see keys
    [0, prefix_len) plus chunk slots [chunk_start, own slot]. `keys_end` (decode steps): the
    attention reads chunk keys up to there, masked, so each row's result is the same however
    many rows share the step (kernels.attention)."""

    prefix_len: int
    chunk_start: int
    chunk_end: int
    rows: int
    keys_end: int | None = None

    @classmethod
    def in_place(cls, start: int, end: int) -> "Segment":
        return cls(start, start, end, end - start)


@dataclass(frozen=True)
class Copy:
    """Cache slots [start, end) copied to [to, to + end - start) with keys rotated by `delta`
    positions, layer by layer: after the forward's own rows are written, before any attends. So
    a draft can read rows that the same forward encodes (a FIM suffix window with pending rows)."""

    start: int
    end: int
    to: int
    delta: int


class Transformer:
    """Weights of a Llama/Qwen2 model, fused per layer (qkv, gate+up) for fewer weight passes.
    `quant` is "none" (dense weights in `dtype`) or "int8" (linear.py; the embedding table and
    the norms stay in `dtype`)."""

    def __init__(self, shape: Shape, inv_freq: torch.Tensor, weights: dict[str, torch.Tensor],
                 device: torch.device, dtype: torch.dtype, quant: str = "none"):
        self.shape, self.device, self.dtype, self.quant = shape, device, dtype, quant
        self.inv_freq = inv_freq.to(device)

        def take(name: str) -> torch.Tensor:
            try:
                return weights.pop(name).to(device=device, dtype=dtype)
            except KeyError:
                raise ModelLoadError(f"weight {name!r} is missing from the model files") from None

        self.embed = take("model.embed_tokens.weight")
        self.layers = []
        for i in range(shape.layers):
            p = f"model.layers.{i}."
            q, k, v = (take(p + f"self_attn.{n}_proj.weight") for n in "qkv")
            bias = None
            if p + "self_attn.q_proj.bias" in weights:
                bias = torch.cat([take(p + f"self_attn.{n}_proj.bias") for n in "qkv"])
            self.layers.append(Layer(
                norm1=take(p + "input_layernorm.weight"),
                qkv=make_linear(torch.cat((q, k, v)), bias, quant),
                o=make_linear(take(p + "self_attn.o_proj.weight"), None, quant),
                norm2=take(p + "post_attention_layernorm.weight"),
                gate_up=make_linear(torch.cat((take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight"))),
                                    None, quant),
                down=make_linear(take(p + "mlp.down_proj.weight"), None, quant),
            ))
        self.norm = take("model.norm.weight")
        head = self.embed if shape.tied or "lm_head.weight" not in weights else take("lm_head.weight")
        self.lm_head = make_linear(head, None, quant)
        self.int8 = int8_layers(self.layers) if quant == "int8" else None  # step.py runs these
        self.dims = Dims(shape.heads, shape.kv_heads, shape.head_dim, shape.eps)

    @classmethod
    def from_folder(cls, folder: Path, device: torch.device, dtype: torch.dtype,
                    quant: str = "none") -> "Transformer":
        config = AutoConfig.from_pretrained(folder)
        shape = Shape.from_config(config)
        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"no .safetensors weights in {folder}")
        weights: dict[str, torch.Tensor] = {}
        for f in files:
            weights.update(load_file(f))
        return cls(shape, rope_inv_freq(config), weights, device, dtype, quant)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, positions: torch.Tensor, segments: list[Segment],
                k_cache: torch.Tensor, v_cache: torch.Tensor, logits_rows: int = 0,
                interrupt: Callable[[], bool] | None = None, copies: tuple[Copy, ...] = ()) -> torch.Tensor | None:
        """Run rows ids [N] at positions [N], writing their K/V into the cache slots their
        segments name (in order), and return logits of the last `logits_rows` rows (fp32).

        Within a layer every row's K/V is written before any row attends, so a later segment
        sees this layer's fresh K/V of an earlier one (a fused edit + tail re-run is exact).
        `interrupt` is asked before each layer; when it says so the forward raises Cancelled,
        the layers before rewritten for its rows (idle work that must yield within a layer).
        int8 forwards run in step.py's TorchScript stack unless they copy rows (same results).
        """
        s = self.shape
        x = self.embed[ids]
        n = ids.shape[0]
        cos, sin = kernels.rope_angles(positions.to(self.device), self.inv_freq)
        half = s.head_dim // 2
        cos, sin = cos[:, None, :half], sin[:, None, :half]
        slot_start = segments[0].chunk_end - n
        slots = slice(slot_start, slot_start + n) if len(segments) == 1 else torch.cat(
            [torch.arange(g.chunk_end - g.rows, g.chunk_end) for g in segments]).to(self.device)
        if self.int8 is not None and not copies:
            x = self._stack(x, cos, sin, slots, segments, k_cache, v_cache, interrupt)
        else:
            self._layers(x, cos, sin, slots, segments, k_cache, v_cache, interrupt, copies)
        if not logits_rows:
            return None
        return self.lm_head(rms_norm(x[-logits_rows:], self.norm, s.eps)).to(torch.float32)

    def _stack(self, x, cos, sin, slots, segments, k_cache, v_cache, interrupt) -> torch.Tensor:
        """All layers in one TorchScript call, or one call per layer when interruptible."""
        spans = [(g.prefix_len, g.chunk_start, g.chunk_end, g.rows, g.chunk_end if g.keys_end is None else g.keys_end)
                 for g in segments]
        one_run = isinstance(slots, slice)
        args = (cos, sin, slots.start if one_run else 0, None if one_run else slots, spans, k_cache, v_cache,
                self.int8, self.dims)
        if interrupt is None:
            return run_layers(x, *args, 0, self.shape.layers)
        for li in range(self.shape.layers):
            if interrupt():
                raise Cancelled(f"forward interrupted before layer {li}")
            x = run_layers(x, *args, li, li + 1)
        return x

    def _layers(self, x, cos, sin, slots, segments, k_cache, v_cache, interrupt, copies) -> None:
        """The layers in Python, x updated in place: the dense path (any device, Triton kernels
        on CUDA) and forwards that copy rows between a layer's K/V writes and its attention."""
        s, n = self.shape, x.shape[0]
        q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
        for li, layer in enumerate(self.layers):
            if interrupt is not None and interrupt():
                raise Cancelled(f"forward interrupted before layer {li}")
            qkv = layer.qkv(rms_norm(x, layer.norm1, s.eps))
            qk = kernels.rotate(qkv[:, :q_size + kv_size].view(n, s.heads + s.kv_heads, s.head_dim), cos, sin)
            q = qk[:, :s.heads].transpose(0, 1)
            k_cache[li][:, slots] = qk[:, s.heads:].transpose(0, 1)
            v_cache[li][:, slots] = qkv[:, q_size + kv_size:].view(n, s.kv_heads, s.head_dim).transpose(0, 1)
            for c in copies:
                kernels.rotate_and_move_(k_cache[li:li + 1], v_cache[li:li + 1], c.start, c.end,
                                         c.to - c.start, c.delta, self.inv_freq)
            outs, row = [], 0
            for g in segments:
                outs.append(kernels.attention(q[:, row:row + g.rows], k_cache[li], v_cache[li],
                                              g.prefix_len, g.chunk_start, g.chunk_end, keys_end=g.keys_end))
                row += g.rows
            attn = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
            x += layer.o(attn.transpose(0, 1).reshape(n, q_size))
            gate, up = layer.gate_up(rms_norm(x, layer.norm2, s.eps)).chunk(2, dim=-1)
            x += layer.down(F.silu(gate).mul_(up))
