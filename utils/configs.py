"""Decoder-only Transformer configurations for the scale chapters (parameter count, FLOPs, memory).

    from utils.configs import TransformerConfig, PRESETS, PUBLISHED_PARAMS

`TransformerConfig` has exactly the fields of CURRICULUM.md, part 6. A model is: token embeddings
(vocab_size x hidden_size), an optional learned position table (learned_positions x hidden_size),
num_hidden_layers blocks of (norm, attention, norm, MLP), a final norm, and an LM head
(hidden_size -> vocab_size, no bias) that shares the embedding matrix when tie_word_embeddings.

The presets copy the fields of each model's published `config.json` (Hugging Face Hub); the
source is written above each one. Fields the parameter count does not depend on (rope_theta,
eps, max_position_embeddings of rotary models, ...) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass


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
