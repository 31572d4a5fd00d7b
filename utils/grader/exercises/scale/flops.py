"""Part 6, scale: training FLOPs per token, Kaplan et al. 2020 (chapter scale/flops).

The oracle takes N, the non-embedding parameter count, from the grader's meta-device model
(parameter_count.build_meta_model), never from a formula.
"""

from __future__ import annotations

from ....configs import PRESETS, TransformerConfig
from ....i18n import msg
from ...core import Case, Exercise, Mistake
from ...inputs import call
from ...registry import register
from .parameter_count import COUNTING_BUILTINS, count_parts, describe_config, non_embedding_params, random_config


def _oracle(cfg: TransformerConfig, seq_len: int) -> int:
    n = non_embedding_params(cfg)
    return 6 * n + 6 * cfg.num_hidden_layers * seq_len * cfg.num_attention_heads * cfg.dim_per_head


def _case(cfg, seq_len, note=""):
    return Case(make=lambda: call(cfg, seq_len), note=msg("{note}: seq_len={seq_len}, {config}", note=note,
                                                          seq_len=seq_len, config=describe_config(cfg)))


def _cases():
    base = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    cases = [
        _case(TransformerConfig(**base), 16, "defaults"),
        _case(TransformerConfig(**base), 1, "a single token of context"),
        _case(TransformerConfig(**base, tie_word_embeddings=True), 64, "tied embeddings"),
        _case(TransformerConfig(**base, learned_positions=128), 128, "learned positions are embeddings too"),
        # kv heads * head_dim (24) differs from hidden_size (32) and from H * head_dim (48): an attention term
        # written with the kv heads must not look like the registered "attention term with hidden_size" here
        _case(TransformerConfig(**base, head_dim=12, num_key_value_heads=2), 32, "head_dim * H != hidden_size, GQA"),
        _case(TransformerConfig(**base, norm="layernorm", qkv_bias=True, mlp_bias=True, out_bias=True,
                                gated_mlp=False), 8, "GPT style block"),
    ]
    cases += [_case(random_config(100 + s), 2 ** (s % 12), msg("random config {seed}", seed=s)) for s in range(12)]
    cases += [_case(cfg, 4096, name) for name, cfg in PRESETS.items()]
    return cases


def _attn(cfg, seq_len):
    return cfg.num_hidden_layers * seq_len * cfg.num_attention_heads * cfg.dim_per_head


def _n(cfg):
    """Non-embedding parameters by formula, for the mistakes (the oracle does not use it)."""
    total = count_parts(cfg)
    return total - cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2) \
        - cfg.learned_positions * cfg.hidden_size


def flops_forward_only(cfg, seq_len):
    return 2 * _n(cfg) + 2 * _attn(cfg, seq_len)


def flops_with_embeddings(cfg, seq_len):
    return 6 * count_parts(cfg) + 6 * _attn(cfg, seq_len)


def flops_head_as_non_embedding(cfg, seq_len):
    n = count_parts(cfg) - cfg.vocab_size * cfg.hidden_size - cfg.learned_positions * cfg.hidden_size
    return 6 * n + 6 * _attn(cfg, seq_len)


def flops_no_attention(cfg, seq_len):
    return 6 * _n(cfg)


def flops_attention_hidden_size(cfg, seq_len):
    return 6 * _n(cfg) + 6 * cfg.num_hidden_layers * seq_len * cfg.hidden_size


def flops_12_L_d2(cfg, seq_len):
    return 6 * 12 * cfg.num_hidden_layers * cfg.hidden_size ** 2 + 6 * _attn(cfg, seq_len)


def flops_attention_squared(cfg, seq_len):
    return 6 * _n(cfg) + 6 * _attn(cfg, seq_len) * seq_len


register(Exercise(
    name="training_flops_per_token",
    chapter="scale/flops",
    signature="training_flops_per_token(cfg: TransformerConfig, seq_len: int) -> int",
    oracle=_oracle,
    cases=_cases,
    forbidden=COUNTING_BUILTINS,
    hints=(
        "two terms: 6 FLOPs per parameter of N (forward 2, backward 4), and an attention term no parameter "
        "sees; N is Kaplan's non-embedding count   (eq. fl-train)",
        "N = the exact parameter count minus the vocabulary matrices (V*d once if tied, twice if not) and the "
        "position table; the attention term is per token, linear in seq_len, with the attention width H * head_dim",
        "6 * N + 6 * L * seq_len * H * head_dim, N = every parameter except the token embeddings, the position "
        "table and the (untied) LM head   (eq. fl-train)",
    ),
    mistakes=[
        Mistake("2ND: forward only", flops_forward_only,
                "2N + 2*L*T*H*hd is the FORWARD pass; training adds the backward pass, twice the forward "
                "(gradients w.r.t. activations and w.r.t. weights): 6N + 6*L*T*H*hd."),
        Mistake("embeddings counted in N", flops_with_embeddings,
                "N is the NON-embedding count: leave out the token embeddings, the position table and the LM "
                "head (Kaplan et al. 2020); an embedding lookup does no multiply-adds."),
        Mistake("untied head counted in N", flops_head_as_non_embedding,
                "you removed the input embeddings but kept the untied LM head in N: Kaplan's N excludes both "
                "vocabulary matrices (the de-embedding cost is left out with them)."),
        Mistake("no attention term", flops_no_attention,
                "you left out the attention term 6*L*T*H*hd: the scores QK^T and the weighted sum over V are "
                "matmuls with no parameters, and they grow with the context length T."),
        Mistake("attention term with hidden_size", flops_attention_hidden_size,
                "the attention term uses the attention width H * head_dim, which differs from hidden_size when "
                "head_dim is set."),
        Mistake("12 L d^2 for N", flops_12_L_d2,
                "N = 12*L*d^2 is an approximation (4x plain MLP, no GQA, no biases, no norms); use the exact "
                "non-embedding count of this config."),
        Mistake("attention per token times T", flops_attention_squared,
                "per token the attention costs 6*L*T*H*hd (each query meets T keys); T^2 is the cost of the whole "
                "sequence, not of one token."),
    ],
))
