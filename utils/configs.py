"""Decoder-only Transformer configurations for the scale chapters (parameter count, FLOPs, memory).

    from utils.configs import TransformerConfig, PRESETS, PUBLISHED_PARAMS, build_meta_model

`TransformerConfig` holds the fields the scale chapters need, named as in Hugging Face's `config.json`
(`head_dim`, `num_key_value_heads`, `tie_word_embeddings`, ...) plus the architecture switches a
config.json implies through its model type (biases, gated MLP, norm, learned positions). A model is:
token embeddings (vocab_size x hidden_size), an optional learned position table (learned_positions x
hidden_size), num_hidden_layers blocks of (norm, attention, norm, MLP), a final norm, and an LM head
(hidden_size -> vocab_size, no bias) that shares the embedding matrix when tie_word_embeddings.

The presets copy the fields of each model's published `config.json` (Hugging Face Hub); the
source is written above each one. Fields the parameter count does not depend on (rope_theta,
eps, max_position_embeddings of rotary models, ...) are left out.

`build_meta_model(cfg)` builds the PyTorch model a config describes on the meta device (shapes, no
memory): the grader's parameter-count oracle, and what the chapters count parameters on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None   # None: num_attention_heads (multi-head attention)
    head_dim: int | None = None              # None: hidden_size // num_attention_heads
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    gated_mlp: bool = True                   # True: gate, up, down (SwiGLU); False: up, down
    norm: str = "rmsnorm"                    # "rmsnorm" (weight) or "layernorm" (weight and bias)
    tie_word_embeddings: bool = False
    learned_positions: int = 0               # rows of a learned position table (0: none, e.g. RoPE)

    @property
    def kv_heads(self) -> int:
        """num_key_value_heads with None resolved."""
        return self.num_attention_heads if self.num_key_value_heads is None else self.num_key_value_heads

    @property
    def dim_per_head(self) -> int:
        """head_dim with None resolved."""
        return self.hidden_size // self.num_attention_heads if self.head_dim is None else self.head_dim


# https://huggingface.co/openai-community/gpt2/blob/main/config.json
# n_embd 768, n_layer 12, n_head 12, n_inner null (= 4 * 768), n_positions 1024, vocab 50257;
# LayerNorm, biases on every Linear (Conv1D), GELU MLP, LM head tied to wte.
GPT2 = TransformerConfig(
    vocab_size=50257, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    qkv_bias=True, out_bias=True, mlp_bias=True, gated_mlp=False, norm="layernorm",
    tie_word_embeddings=True, learned_positions=1024,
)

# https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
LLAMA2_7B = TransformerConfig(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32,
)

# https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
LLAMA3_8B = TransformerConfig(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8,
)

# https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
MISTRAL_7B = TransformerConfig(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8,
)

# https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json
# Qwen2 attention has biases on q, k, v (not on o_proj); tie_word_embeddings false.
QWEN25_7B = TransformerConfig(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, qkv_bias=True,
)

# GPT-3 175B has no published config.json: Brown et al. 2020, "Language Models are Few-Shot Learners",
# Table 2.1 (n_layers 96, d_model 12288, n_heads 96, d_head 128, context 2048) and section 2.1 (the GPT-2
# architecture: LayerNorm, biases, 4x MLP, learned positions, GPT-2's 50257-token vocabulary, tied head).
GPT3_175B = TransformerConfig(
    vocab_size=50257, hidden_size=12288, intermediate_size=4 * 12288, num_hidden_layers=96, num_attention_heads=96,
    qkv_bias=True, out_bias=True, mlp_bias=True, gated_mlp=False, norm="layernorm",
    tie_word_embeddings=True, learned_positions=2048,
)

# Gemma-7B ties its embeddings although it is a 7B model: https://huggingface.co/google/gemma-7b/blob/main/config.json
# has no tie_word_embeddings field, and transformers' GemmaConfig defaults it to True (Gemma Team 2024,
# "Gemma: Open Models Based on Gemini Research and Technology": input and output embeddings are shared).
# hidden 3072, 28 layers, 16 heads of head_dim 256 (16 key/value heads), GeGLU MLP of 24576, RMSNorm.
# Not in PRESETS: the chapters quote it for tying only.
GEMMA_7B = TransformerConfig(
    vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=16, head_dim=256, tie_word_embeddings=True,
)

PRESETS = {
    "GPT-2 (124M)": GPT2,
    "Llama-2-7B": LLAMA2_7B,
    "Llama-3-8B": LLAMA3_8B,
    "Mistral-7B": MISTRAL_7B,
    "Qwen2.5-7B": QWEN25_7B,
}

# Published totals, to compare a count with: the parameter count (each tensor once) of the transformers
# model loaded from the Hub checkpoint linked above, `model.num_parameters()` (buffers such as rotary
# inv_freq are not parameters).
# GPT-2's model card says "124M"; Llama 2's paper says "7B", and so on: these are the exact figures.
PUBLISHED_PARAMS = {
    "GPT-2 (124M)": 124_439_808,
    "Llama-2-7B": 6_738_415_616,
    "Llama-3-8B": 8_030_261_248,
    "Mistral-7B": 7_241_732_096,
    "Qwen2.5-7B": 7_615_616_512,
}


# --------------------------------------------------------------------------- the model a config describes

def _norm(cfg: TransformerConfig, device) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.hidden_size, device=device)            # weight and bias
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.hidden_size, device=device)              # weight only
    raise ValueError(f"unknown norm {cfg.norm!r}")


class _Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, device):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.dim_per_head
        q_dim, kv_dim = cfg.num_attention_heads * hd, cfg.kv_heads * hd
        self.attn_norm = _norm(cfg, device)
        self.q_proj = nn.Linear(d, q_dim, bias=cfg.qkv_bias, device=device)
        self.k_proj = nn.Linear(d, kv_dim, bias=cfg.qkv_bias, device=device)
        self.v_proj = nn.Linear(d, kv_dim, bias=cfg.qkv_bias, device=device)
        self.o_proj = nn.Linear(q_dim, d, bias=cfg.out_bias, device=device)
        self.mlp_norm = _norm(cfg, device)
        if cfg.gated_mlp:
            self.gate_proj = nn.Linear(d, cfg.intermediate_size, bias=cfg.mlp_bias, device=device)
        self.up_proj = nn.Linear(d, cfg.intermediate_size, bias=cfg.mlp_bias, device=device)
        self.down_proj = nn.Linear(cfg.intermediate_size, d, bias=cfg.mlp_bias, device=device)


class MetaTransformer(nn.Module):
    """The model a TransformerConfig describes, built from nn.Embedding / nn.Linear / norms (no forward)."""

    def __init__(self, cfg: TransformerConfig, device="meta"):
        super().__init__()
        # _weight skips the normal_ initialisation, whose first call on the meta device costs seconds
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size, device=device))
        self.embed_positions = (nn.Embedding(cfg.learned_positions, cfg.hidden_size,
                                             _weight=torch.empty(cfg.learned_positions, cfg.hidden_size,
                                                                 device=device))
                                if cfg.learned_positions else None)
        self.layers = nn.ModuleList(_Block(cfg, device) for _ in range(cfg.num_hidden_layers))
        self.norm = _norm(cfg, device)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, device=device)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight


def build_meta_model(cfg: TransformerConfig) -> MetaTransformer:
    """The model `cfg` describes, on the meta device: every parameter has its shape and no memory."""
    return MetaTransformer(cfg, device="meta")


def module_params(module: nn.Module) -> int:
    """Parameters of a module, each shared tensor once (what .parameters() yields)."""
    return sum(p.numel() for p in module.parameters())
