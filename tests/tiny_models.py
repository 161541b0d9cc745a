"""Tiny random Llama/Qwen2 models with a real byte-level BPE tokenizer, saved as model folders,
and a probe of the next-token logits that leaves the live cache alone.

They load through exactly the same path as a packaged model (a folder with config.json,
safetensors weights and tokenizer.json), so tests exercise the real loading code in seconds.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from kvsplice.engine.model import Segment
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIAL = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]


def stdlib_corpus(limit_bytes: int = 400_000) -> list[str]:
    """Real code nobody here wrote: the interpreter's own standard library."""
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total > limit_bytes:
            break
    return texts


def train_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(stdlib_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def make_tiny_model(folder: Path, arch: str = "llama", layers: int = 2, seed: int = 0,
                    tokenizer: PreTrainedTokenizerFast | None = None) -> Path:
    """Write a random model of the given family to folder and return it."""
    tokenizer = tokenizer or train_tokenizer()
    common = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rms_norm_eps=1e-6, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10000.0, tie_word_embeddings=True))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1e6, tie_word_embeddings=False))
    else:
        raise ValueError(arch)
    # Random init at std 0.02 makes every distribution near-uniform; widen it so that
    # tokens and positions matter and staleness is visible.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.25)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def last_logits(session):
    """Next-token logits after the whole document, without touching the live cache."""
    c = session.cache
    c.reserve(c.length + 1)
    last = c.length - 1
    ids = [session.head_id, *session.token_ids]
    return session.runtime.model.forward(torch.tensor([ids[last]]), torch.tensor([last]),
                                        [Segment(last, c.length, c.length + 1, 1)], c.k, c.v, logits_rows=1)[0]
