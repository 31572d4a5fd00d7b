"""Part 6, scale: parameter counts of a decoder-only Transformer, an LSTM and a conv2d (chapter scale/parameter_count).

The oracles count the parameters of real PyTorch modules built on the meta device (shapes only, no
memory): `build_meta_model(cfg)` (utils.configs) for a TransformerConfig, nn.LSTM and nn.Conv2d for the others.
"""

from __future__ import annotations

import random

import torch.nn as nn

from ....configs import PRESETS, MetaTransformer, TransformerConfig, build_meta_model, module_params
from ....i18n import msg
from ...core import Case, Exercise, Mistake, Property
from ...inputs import call
from ...protocol import listed
from ...registry import register

COUNTING_BUILTINS = ("Tensor.numel", "Tensor.nelement", "torch.numel")


# --------------------------------------------------------------------------- the grader's own model
# MetaTransformer, build_meta_model and module_params live in utils.configs (the chapters count on them too).

def non_embedding_params(cfg: TransformerConfig) -> int:
    """Kaplan et al. 2020's N: every parameter but the vocabulary matrices and the position table."""
    model = build_meta_model(cfg)
    return module_params(model.layers) + module_params(model.norm)


# --------------------------------------------------------------------------- count_params: cases

def random_config(seed: int, **overrides) -> TransformerConfig:
    """A small random config; every field varies from seed to seed."""
    r = random.Random(seed)
    heads = r.choice([1, 2, 3, 4, 6, 8])
    kv = r.choice([None, heads] + [k for k in (1, 2, heads // 2) if k and heads % k == 0])
    head_dim = r.choice([None, None, r.choice([4, 8, 16])])
    fields = dict(
        vocab_size=r.randint(11, 3000), hidden_size=heads * r.choice([4, 8, 12]),
        intermediate_size=r.randint(5, 200), num_hidden_layers=r.randint(1, 5), num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=head_dim, qkv_bias=r.random() < 0.5, out_bias=r.random() < 0.5,
        mlp_bias=r.random() < 0.5, gated_mlp=r.random() < 0.5, norm=r.choice(["rmsnorm", "layernorm"]),
        tie_word_embeddings=r.random() < 0.5, learned_positions=r.choice([0, 0, r.randint(1, 300)]),
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def describe_config(cfg: TransformerConfig) -> str:
    bits = [f"L={cfg.num_hidden_layers} d={cfg.hidden_size} H={cfg.num_attention_heads}"]
    if cfg.num_key_value_heads not in (None, cfg.num_attention_heads):
        bits.append(f"GQA kv={cfg.num_key_value_heads}")
    if cfg.head_dim is not None:
        bits.append(f"head_dim={cfg.head_dim}")
    bits += [name for name in ("qkv_bias", "out_bias", "mlp_bias") if getattr(cfg, name)]
    bits.append("gated MLP" if cfg.gated_mlp else "plain MLP")
    bits.append(cfg.norm)
    if cfg.tie_word_embeddings:
        bits.append("tied head")
    if cfg.learned_positions:
        bits.append(msg("{n} learned positions", n=cfg.learned_positions))
    return listed(bits)


def _cfg_case(cfg: TransformerConfig, note: str = "") -> Case:
    config = describe_config(cfg)
    return Case(make=lambda: call(cfg), note=msg("{note}: {config}", note=note, config=config) if note else config)


def _count_cases():
    base = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    cases = [
        _cfg_case(TransformerConfig(**base), "defaults (Llama style: RMSNorm, gated MLP, no biases)"),
        _cfg_case(TransformerConfig(**base, num_key_value_heads=2), "grouped-query attention"),
        _cfg_case(TransformerConfig(**base, num_key_value_heads=1), "multi-query attention"),
        _cfg_case(TransformerConfig(**base, head_dim=16), "head_dim * heads != hidden_size"),
        _cfg_case(TransformerConfig(**base, qkv_bias=True), "q, k, v biases (Qwen2 style)"),
        _cfg_case(TransformerConfig(**base, qkv_bias=True, num_key_value_heads=2), "q, k, v biases with GQA"),
        _cfg_case(TransformerConfig(**base, out_bias=True), "output projection bias"),
        _cfg_case(TransformerConfig(**base, mlp_bias=True), "MLP biases"),
        _cfg_case(TransformerConfig(**base, gated_mlp=False), "plain two-matrix MLP"),
        _cfg_case(TransformerConfig(**base, norm="layernorm"), "LayerNorm has a bias"),
        _cfg_case(TransformerConfig(**base, tie_word_embeddings=True), "tied LM head"),
        _cfg_case(TransformerConfig(**base, learned_positions=64), "learned position table"),
        _cfg_case(TransformerConfig(**{**base, "num_hidden_layers": 1}), "one layer"),
        _cfg_case(TransformerConfig(vocab_size=7, hidden_size=8, intermediate_size=3, num_hidden_layers=3,
                                    num_attention_heads=2, num_key_value_heads=1, head_dim=4, qkv_bias=True,
                                    out_bias=True, mlp_bias=True, gated_mlp=False, norm="layernorm",
                                    tie_word_embeddings=True, learned_positions=5), "every option on"),
    ]
    cases += [_cfg_case(random_config(seed), msg("random config {seed}", seed=seed)) for seed in range(24)]
    cases += [_cfg_case(cfg, name) for name, cfg in PRESETS.items()]
    return cases


# --------------------------------------------------------------------------- count_params: mistakes

def count_parts(cfg, *, biases=True, norms=True, final_norm=True, ln_bias=True, tied=True, gqa=True, head_dim=True,
           gated=True, positions=True):
    d, V, I, L, H = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size, cfg.num_hidden_layers,
                     cfg.num_attention_heads)
    hd = cfg.dim_per_head if head_dim else d // H
    kv = cfg.kv_heads if gqa else H
    norm = (2 * d if (cfg.norm == "layernorm" and ln_bias) else d) if norms else 0
    attn = d * H * hd + 2 * d * kv * hd + H * hd * d
    if biases:
        attn += (H * hd + 2 * kv * hd) * cfg.qkv_bias + d * cfg.out_bias
    n_mats = 3 if (cfg.gated_mlp and gated) else 2
    mlp = n_mats * d * I + (biases and cfg.mlp_bias) * ((n_mats - 1) * I + d)
    head = 0 if (cfg.tie_word_embeddings and tied) else V * d
    pos = cfg.learned_positions * d if positions else 0
    return V * d + pos + L * (2 * norm + attn + mlp) + (norm if final_norm else 0) + head


def count_forgot_biases(cfg):
    return count_parts(cfg, biases=False)


def count_forgot_norms(cfg):
    return count_parts(cfg, norms=False)


def count_forgot_final_norm(cfg):
    return count_parts(cfg, final_norm=False)


def count_layernorm_no_bias(cfg):
    return count_parts(cfg, ln_bias=False)


def count_tied_twice(cfg):
    return count_parts(cfg, tied=False)


def count_ignores_gqa(cfg):
    return count_parts(cfg, gqa=False)


def count_ignores_head_dim(cfg):
    return count_parts(cfg, head_dim=False)


def count_always_two_matrices(cfg):
    return count_parts(cfg, gated=False)


def count_forgot_positions(cfg):
    return count_parts(cfg, positions=False)


def count_12_L_d2(cfg):
    d = cfg.hidden_size
    return 12 * cfg.num_hidden_layers * d * d + cfg.vocab_size * d


def count_builds_module(cfg):
    lin = nn.Linear(cfg.hidden_size, cfg.vocab_size, device="meta")
    return lin.weight.numel()


def _more_layers_more_params(call):
    a = call(TransformerConfig(100, 32, 64, 2, 4))
    b = call(TransformerConfig(100, 32, 64, 3, 4))
    c = call(TransformerConfig(100, 32, 64, 4, 4))
    if not (b - a == c - b and b > a):
        return msg("adding a layer should add the same number of parameters every time; got {a}, {b}, {c}", a=a, b=b,
                   c=c)
    return None


register(Exercise(
    name="count_params",
    chapter="scale/parameter_count",
    signature="count_params(cfg: TransformerConfig) -> int",
    oracle=lambda cfg: module_params(build_meta_model(cfg)),
    cases=_count_cases,
    forbidden=COUNTING_BUILTINS,
    properties=[Property("each extra layer adds the same count", _more_layers_more_params)],
    hints=(
        "count the pieces one at a time: the vocabulary and position tables (eq. pc-embed), one block's "
        "attention (eq. pc-attn) and MLP (eq. pc-mlp), a norm (d or 2d); then assemble them   (eq. pc-total)",
        "k and v have kv_heads * head_dim outputs, q has H * head_dim (the input size of o); a bias adds one entry "
        "per output; a tied head adds no matrix; each block has two norms and the model a final one",
        "V*d [+ P*d] + L*(2*norm + attention + MLP) + norm [+ V*d if untied]; attention = "
        "d*H*hd + 2*d*kv*hd + H*hd*d (+ biases), MLP = 3*d*I (gated) or 2*d*I (+ biases)   (eq. pc-total)",
    ),
    mistakes=[
        Mistake("forgot biases", count_forgot_biases,
                "you left out the biases: with qkv_bias the q, k, v projections add H*hd + 2*kv*hd, out_bias adds "
                "d, and mlp_bias adds one vector per MLP matrix (its output size)."),
        Mistake("forgot norms", count_forgot_norms,
                "you left out the norms: every block has two (before attention and before the MLP) and there is "
                "a final one; RMSNorm has d weights, LayerNorm 2d."),
        Mistake("forgot final norm", count_forgot_final_norm,
                "you counted the two norms of every block but not the final norm before the LM head."),
        Mistake("LayerNorm without bias", count_layernorm_no_bias,
                "LayerNorm has a weight AND a bias (2d parameters); only RMSNorm has d."),
        Mistake("tied head counted twice", count_tied_twice,
                "with tie_word_embeddings the LM head IS the embedding matrix: count V*d once, not twice."),
        Mistake("ignores GQA", count_ignores_gqa,
                "k_proj and v_proj have num_key_value_heads * head_dim outputs, not num_attention_heads * head_dim: "
                "grouped-query attention shrinks them."),
        Mistake("ignores head_dim", count_ignores_head_dim,
                "head_dim need not be hidden_size // num_attention_heads: when cfg.head_dim is set, q has "
                "H * head_dim outputs and o_proj H * head_dim inputs."),
        Mistake("always two MLP matrices", count_always_two_matrices,
                "a gated MLP (SwiGLU) has three matrices, gate, up and down: 3*d*I, not 2*d*I."),
        Mistake("forgot learned positions", count_forgot_positions,
                "you left out the learned position table: learned_positions rows of hidden_size each."),
        Mistake("12 L d^2", count_12_L_d2,
                "12*L*d^2 (+ V*d) is the interview approximation (4d^2 attention + 8d^2 for a 4x MLP, biases and "
                "norms ignored); the exercise asks for the exact count."),
        Mistake("builds the model", count_builds_module,
                "this exercise asks you to count by formula: Tensor.numel on a built module is off limits."),
    ],
))


# --------------------------------------------------------------------------- count_lstm_params

def _lstm_oracle(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, bias=bias, bidirectional=bidirectional,
                   device="meta")
    return module_params(lstm)


def _args(*args, **kwargs):
    return lambda: call(*args, **kwargs)


def _lstm_cases():
    return [
        Case(_args(10, 20), "one layer, defaults"),
        Case(_args(7, 5, 1, False), "no bias (positional)"),
        Case(_args(16, 32, num_layers=3), "three layers: layer 2 and 3 read hidden_size"),
        Case(_args(8, 12, num_layers=2, bidirectional=True), "bidirectional, two layers"),
        Case(_args(9, 4, num_layers=3, bias=False, bidirectional=True), "bidirectional, no bias"),
        Case(_args(1, 1), "input 1, hidden 1"),
        Case(_args(300, 1024, 2), "word vectors into a big LSTM"),
        Case(_args(20, 20, 4), "input_size = hidden_size"),
        Case(_args(5, 40, 1, True, True), "bidirectional, one layer (positional)"),
    ]


def lstm_one_bias(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    dirs = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        n_in = input_size if layer == 0 else hidden_size * dirs
        total += dirs * (4 * hidden_size * (n_in + hidden_size) + (4 * hidden_size if bias else 0))
    return total


def lstm_one_gate(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    dirs = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        n_in = input_size if layer == 0 else hidden_size * dirs
        total += dirs * (hidden_size * (n_in + hidden_size) + (2 * hidden_size if bias else 0))
    return total


def lstm_input_every_layer(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    dirs = 2 if bidirectional else 1
    return num_layers * dirs * (4 * hidden_size * (input_size + hidden_size) + (8 * hidden_size if bias else 0))


def lstm_one_direction(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    total = 0
    for layer in range(num_layers):
        n_in = input_size if layer == 0 else hidden_size
        total += 4 * hidden_size * (n_in + hidden_size) + (8 * hidden_size if bias else 0)
    return total


def lstm_bidirectional_input_h(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    dirs = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        n_in = input_size if layer == 0 else hidden_size
        total += dirs * (4 * hidden_size * (n_in + hidden_size) + (8 * hidden_size if bias else 0))
    return total


def lstm_always_bias(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    return lstm_one_bias(input_size, hidden_size, num_layers, False, bidirectional) + \
        num_layers * (2 if bidirectional else 1) * 8 * hidden_size


def lstm_builds_module(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    return module_params(nn.LSTM(input_size, hidden_size, num_layers, bias=bias, bidirectional=bidirectional,
                                 device="meta"))


register(Exercise(
    name="count_lstm_params",
    chapter="scale/parameter_count",
    signature="count_lstm_params(input_size, hidden_size, num_layers=1, bias=True, bidirectional=False) -> int",
    oracle=_lstm_oracle,
    cases=_lstm_cases,
    forbidden=COUNTING_BUILTINS,
    hints=(
        "work one layer and one direction at a time: list the weight matrices and bias vectors nn.LSTM creates "
        "(named_parameters() on a small one shows them)   (eq. pc-lstm)",
        "per layer and direction: weight_ih is 4h x n_in, weight_hh is 4h x h, bias_ih and bias_hh 4h each; "
        "a bidirectional layer has two of each",
        "per layer and direction: 4h(n_in + h) + 8h with bias; n_in = input_size for layer 0, h * directions "
        "after   (eq. pc-lstm)",
    ),
    mistakes=[
        Mistake("one bias vector", lstm_one_bias,
                "nn.LSTM has two bias vectors per layer and direction, b_ih and b_hh, each 4h: 8h in all, not 4h."),
        Mistake("one gate", lstm_one_gate,
                "an LSTM has four gates (input, forget, cell, output), each with its own weights: 4h(n_in + h), "
                "not h(n_in + h)."),
        Mistake("input_size in every layer", lstm_input_every_layer,
                "only the first layer reads input_size features; layers 2, 3, ... read the previous layer's output, "
                "hidden_size (times 2 when bidirectional)."),
        Mistake("one direction", lstm_one_direction,
                "bidirectional=True doubles every layer: a forward and a backward LSTM, each with its own weights."),
        Mistake("bidirectional next layer reads h", lstm_bidirectional_input_h,
                "in a bidirectional LSTM the layers after the first read both directions concatenated: 2h inputs, "
                "not h."),
        Mistake("bias always counted", lstm_always_bias,
                "bias=False removes both bias vectors: count them only when bias is True."),
        Mistake("builds the module", lstm_builds_module,
                "this exercise asks you to count by formula: Tensor.numel on a built nn.LSTM is off limits."),
    ],
))


# --------------------------------------------------------------------------- count_conv2d_params

def _conv_oracle(in_channels, out_channels, kernel_size, bias=True, groups=1):
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias, groups=groups, device="meta")
    return module_params(conv)


def _conv_cases():
    return [
        Case(_args(3, 64, 3), "RGB into 64 channels, 3x3"),
        Case(_args(64, 128, 1, False), "1x1 convolution, no bias"),
        Case(_args(16, 32, (3, 5)), "rectangular kernel (3, 5)"),
        Case(_args(32, 32, 3, groups=32), "depthwise: groups = in_channels"),
        Case(_args(8, 16, 3, True, 4), "grouped: groups=4"),
        Case(_args(12, 24, (1, 7), bias=False, groups=3), "grouped, rectangular, no bias"),
        Case(_args(1, 1, 1), "one in, one out, 1x1"),
        Case(_args(6, 18, 5, groups=2), "LeNet-like 5x5, groups=2"),
        Case(_args(4, 4, (2, 2), groups=2), "kernel as a square tuple"),
    ]


def _pair(k):
    return (k, k) if isinstance(k, int) else tuple(k)


def conv_ignores_groups(in_channels, out_channels, kernel_size, bias=True, groups=1):
    kh, kw = _pair(kernel_size)
    return out_channels * in_channels * kh * kw + (out_channels if bias else 0)


def conv_groups_twice(in_channels, out_channels, kernel_size, bias=True, groups=1):
    kh, kw = _pair(kernel_size)
    return (out_channels // groups) * (in_channels // groups) * kh * kw + (out_channels if bias else 0)


def conv_square_kernel(in_channels, out_channels, kernel_size, bias=True, groups=1):
    k = _pair(kernel_size)[0]
    return out_channels * (in_channels // groups) * k * k + (out_channels if bias else 0)


def conv_bias_per_input(in_channels, out_channels, kernel_size, bias=True, groups=1):
    kh, kw = _pair(kernel_size)
    return out_channels * (in_channels // groups) * kh * kw + (in_channels if bias else 0)


def conv_always_bias(in_channels, out_channels, kernel_size, bias=True, groups=1):
    kh, kw = _pair(kernel_size)
    return out_channels * (in_channels // groups) * kh * kw + out_channels


def conv_builds_module(in_channels, out_channels, kernel_size, bias=True, groups=1):
    return module_params(nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias, groups=groups,
                                   device="meta"))


register(Exercise(
    name="count_conv2d_params",
    chapter="scale/parameter_count",
    signature="count_conv2d_params(in_channels, out_channels, kernel_size, bias=True, groups=1) -> int",
    oracle=_conv_oracle,
    cases=_conv_cases,
    forbidden=COUNTING_BUILTINS,
    hints=(
        "every output channel has one filter: how many input channels does it see when the channels are split "
        "into groups?   (eq. pc-conv)",
        "the weight of nn.Conv2d has shape (out_channels, in_channels // groups, k_h, k_w); the bias has "
        "out_channels entries; an int kernel_size means (k, k)",
        "C_out * (C_in / groups) * k_h * k_w + C_out (bias); kernel_size may be an int or a pair   (eq. pc-conv)",
    ),
    mistakes=[
        Mistake("ignores groups", conv_ignores_groups,
                "with groups=g each output channel sees only C_in / g input channels: the weight is "
                "C_out x (C_in / g) x k_h x k_w."),
        Mistake("divides by groups twice", conv_groups_twice,
                "groups splits the inputs AND the outputs into g groups, but each of the C_out filters still "
                "exists: C_out * (C_in / g) * k_h * k_w, not (C_out / g) * (C_in / g) * k_h * k_w."),
        Mistake("square kernel assumed", conv_square_kernel,
                "kernel_size may be a pair (k_h, k_w): multiply both sides, not k_h squared."),
        Mistake("bias per input channel", conv_bias_per_input,
                "the bias has one entry per OUTPUT channel (C_out), not per input channel."),
        Mistake("bias always counted", conv_always_bias,
                "bias=False means no bias vector: add C_out only when bias is True."),
        Mistake("builds the module", conv_builds_module,
                "this exercise asks you to count by formula: Tensor.numel on a built nn.Conv2d is off limits."),
    ],
))

__all__ = ["MetaTransformer", "build_meta_model", "module_params", "non_embedding_params", "random_config"]
