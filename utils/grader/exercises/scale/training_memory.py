"""Part 6, scale: training memory, model states with ZeRO and activations per layer (chapter scale/training_memory).

Oracles are the papers' formulas, written as lookup tables:
- model states: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
  Models", section 5 and Figure 1: with mixed-precision Adam, 2 bytes of fp16 weights, 2 of fp16 gradients
  and K = 12 of fp32 optimizer states (master weights, momentum, variance) per parameter. Stage 1 (P_os)
  partitions the optimizer states over N_d GPUs, stage 2 (P_os+g) the gradients too, stage 3 (P_os+g+p)
  the weights too.
- activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  Table 2 (bytes per layer, 16-bit activations, 1-byte dropout masks), built from the per-term accounting of
  section 4.1 (ACTIVATION_TERMS below). Under tensor parallelism the terms stored outside the split matmuls stay
  whole on every GPU: the two LayerNorm inputs, the inputs of the column-parallel QKV and MLP up-projections (the
  LayerNorm outputs, which such a layer needs whole and keeps for its weight gradient; apex/Megatron's
  LinearWithGradAccumulationAndAsyncCommunication saves its input, all-gathered again in the backward pass with
  sequence parallelism) and the two post-block dropout masks: 2 + 2 + 2 + 2 + 1 + 1 = 10 sbh.
"""

from __future__ import annotations

from ....i18n import msg
from ...core import Case, Exercise, Mistake, Property
from ...inputs import call
from ...registry import register

# --------------------------------------------------------------------------- model_state_bytes

# bytes per parameter held whole on every GPU, bytes per parameter split over the GPUs (ZeRO, section 5)
ZERO_STAGES = {0: (16, 0), 1: (4, 12), 2: (2, 14), 3: (0, 16)}


def _state_oracle(n_params, zero_stage=0, n_gpus=1):
    whole, split = ZERO_STAGES[zero_stage]
    return float(whole * n_params + split * n_params / n_gpus)


def _args(*args, **kwargs):
    return lambda: call(*args, **kwargs)


def _state_cases():
    psi = 7_500_000_000
    return [
        Case(_args(1_000_000), "one million parameters, defaults"),
        Case(_args(psi, 0, 64), "ZeRO paper, 7.5B on 64 GPUs: baseline"),
        Case(_args(psi, 1, 64), "ZeRO paper: P_os"),
        Case(_args(psi, 2, 64), "ZeRO paper: P_os+g"),
        Case(_args(psi, 3, 64), "ZeRO paper: P_os+g+p"),
        Case(_args(6_738_415_616, zero_stage=3, n_gpus=8), "Llama-2-7B, stage 3, 8 GPUs (keywords)"),
        Case(_args(124_439_808, zero_stage=2, n_gpus=3), "GPT-2, stage 2 on 3 GPUs (not a divisor)"),
        Case(_args(1000, 1, 1), "stage 1 on a single GPU saves nothing"),
        Case(_args(1000, 3, 1), "stage 3 on a single GPU saves nothing"),
        Case(_args(10**9, 1, 4), "1B, stage 1, 4 GPUs"),
        Case(_args(10**9, 2, 1024), "1B, stage 2, 1024 GPUs"),
    ]


def state_no_master_weights(n_params, zero_stage=0, n_gpus=1):
    whole, split = {0: (12, 0), 1: (4, 8), 2: (2, 10), 3: (0, 12)}[zero_stage]
    return float(whole * n_params + split * n_params / n_gpus)


def state_all_split(n_params, zero_stage=0, n_gpus=1):
    return float(16 * n_params / n_gpus)


def state_stage_shifted(n_params, zero_stage=0, n_gpus=1):
    whole, split = ZERO_STAGES[min(zero_stage + 1, 3)]
    return float(whole * n_params + split * n_params / n_gpus)


def state_stage2_as_stage1(n_params, zero_stage=0, n_gpus=1):
    whole, split = ZERO_STAGES[1 if zero_stage == 2 else zero_stage]
    return float(whole * n_params + split * n_params / n_gpus)


def state_bits(n_params, zero_stage=0, n_gpus=1):
    whole, split = ZERO_STAGES[zero_stage]
    return float(8 * (whole * n_params + split * n_params / n_gpus))


def state_fp32_everything(n_params, zero_stage=0, n_gpus=1):
    # 4 bytes weights + 4 bytes gradients + 8 bytes Adam moments, partitioned the same way
    whole, split = {0: (16, 0), 1: (8, 8), 2: (4, 12), 3: (0, 16)}[zero_stage]
    return float(whole * n_params + split * n_params / n_gpus)


def _state_monotone(call):
    got = [call(10**9, s, 16) for s in range(4)]
    if not all(a > b for a, b in zip(got, got[1:])):
        return msg("memory should shrink from stage 0 to 3 on 16 GPUs; got {got}", got=got)
    return None


register(Exercise(
    name="model_state_bytes",
    chapter="scale/training_memory",
    signature="model_state_bytes(n_params, zero_stage=0, n_gpus=1) -> float",
    oracle=_state_oracle,
    cases=_state_cases,
    properties=[Property("each ZeRO stage needs less memory than the one before", _state_monotone)],
    hints=(
        "model states are three pieces, weights, gradients and optimizer states, at 2, 2 and 12 bytes per "
        "parameter; a ZeRO stage decides which pieces are split over the GPUs   (eqs. tm-16, tm-zero)",
        "each stage splits one more piece, dividing it by n_gpus: stage 1 the optimizer states, stage 2 also the "
        "gradients, stage 3 also the weights",
        "stage 0: 16 Psi; 1: 4 Psi + 12 Psi / N; 2: 2 Psi + 14 Psi / N; 3: 16 Psi / N   (eq. tm-zero)",
    ),
    mistakes=[
        Mistake("no fp32 master weights", state_no_master_weights,
                "mixed-precision Adam keeps an fp32 copy of the weights besides the momentum and variance: "
                "K = 4 + 4 + 4 = 12 bytes of optimizer state per parameter, 16 in all, not 12."),
        Mistake("everything split at every stage", state_all_split,
                "only stage 3 splits everything: stage 0 keeps all 16 bytes on every GPU, stage 1 splits only "
                "the 12 bytes of optimizer states, stage 2 also the 2 bytes of gradients."),
        Mistake("stages off by one", state_stage_shifted,
                "your stages are shifted by one: stage 0 is plain data parallelism (nothing split), stage 1 splits "
                "the optimizer states, stage 2 adds gradients, stage 3 adds weights."),
        Mistake("stage 2 keeps gradients whole", state_stage2_as_stage1,
                "stage 2 (P_os+g) also splits the fp16 gradients: 2 Psi + 14 Psi / N, not 4 Psi + 12 Psi / N."),
        Mistake("bits, not bytes", state_bits,
                "you returned bits: the function returns bytes (2 bytes per fp16 number, 4 per fp32)."),
        Mistake("fp32 weights and gradients", state_fp32_everything,
                "in mixed precision the working weights and gradients are fp16 (2 bytes each); the 4-byte copy is "
                "the master weights inside the optimizer states: 2 + 2 + 12, not 4 + 4 + 8."),
    ],
))


# --------------------------------------------------------------------------- activation_bytes_per_layer

# What one layer saves for its backward pass (Korthikanti et al. 2022, section 4.1): bytes in units of sbh, in
# units of as^2b, and whether tensor parallelism splits the term over the t GPUs (section 4.2.1).
ACTIVATION_TERMS = {
    "LayerNorm 1 input": (2, 0, False),
    "QKV projection input (LayerNorm 1 output)": (2, 0, False),
    "Q and K for QK^T": (4, 0, True),
    "softmax output": (0, 2, True),
    "attention dropout mask": (0, 1, True),
    "dropout output and V for PV": (2, 2, True),
    "output projection input": (2, 0, True),
    "attention-output dropout mask": (1, 0, False),
    "LayerNorm 2 input": (2, 0, False),
    "MLP up-projection input (LayerNorm 2 output)": (2, 0, False),
    "GELU input": (8, 0, True),
    "MLP down-projection input": (8, 0, True),
    "MLP dropout mask": (1, 0, False),
}
WHOLE_SBH = sum(c for c, _, split in ACTIVATION_TERMS.values() if not split)      # 10: replicated under TP
SPLIT_SBH = sum(c for c, _, split in ACTIVATION_TERMS.values() if split)          # 24
SCORES_AS2B = sum(q for _, q, _ in ACTIVATION_TERMS.values())                     # 5: all inside attention


def _act_oracle(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                recompute="none"):
    s, b, h, a, t = seq_len, batch_size, hidden_size, n_heads, tensor_parallel
    if recompute == "full":
        return float(s * b * h * 2)                                   # Table 2, full activation recompute
    linear = (WHOLE_SBH + SPLIT_SBH) / t if sequence_parallel else WHOLE_SBH + SPLIT_SBH / t   # 34/t or 10 + 24/t
    if recompute == "selective":
        return float(s * b * h * linear)
    if recompute == "none":
        return float(s * b * h * (linear + SCORES_AS2B * a * s / (h * t)))
    raise ValueError(f"recompute must be 'none', 'selective' or 'full', not {recompute!r}")


def _act_cases():
    gpt3 = (2048, 1, 12288, 96)
    return [
        Case(_args(512, 4, 1024, 16), "no parallelism, defaults"),
        Case(_args(2048, 1, 12288, 96, 8), "GPT-3 175B, tensor parallel 8"),
        Case(_args(*gpt3, 8, True), "GPT-3 175B, tensor + sequence parallel"),
        Case(_args(*gpt3, 8, False, "selective"), "tensor parallel, selective recompute"),
        Case(_args(*gpt3, 8, True, "selective"), "tensor + sequence parallel, selective recompute"),
        Case(_args(*gpt3, 8, True, "full"), "full recompute"),
        Case(_args(1024, 8, 768, 12, recompute="full"), "full recompute, keywords"),
        Case(_args(1024, 8, 768, 12, recompute="selective"), "selective recompute, no tensor parallelism"),
        Case(_args(4096, 2, 4096, 32, tensor_parallel=4, sequence_parallel=True), "keywords, t=4 with SP"),
        Case(_args(100, 3, 60, 6, 3), "t=3 does not divide 24"),
        Case(_args(8192, 1, 8192, 64, 1, True), "sequence parallel with t=1 changes nothing"),
    ]


def act_no_scores(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                  recompute="none"):
    if recompute == "none":
        recompute = "selective"
    return _act_oracle(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, sequence_parallel, recompute)


def act_ignores_sp(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                   recompute="none"):
    return _act_oracle(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, False, recompute)


def act_tp_splits_all(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                      recompute="none"):
    return _act_oracle(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, True, recompute)


def act_scores_not_split(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                         recompute="none"):
    s, b, h, a, t = seq_len, batch_size, hidden_size, n_heads, tensor_parallel
    extra = 5 * a * s * s * b * (1 - 1 / t) if recompute == "none" else 0.0
    return _act_oracle(s, b, h, a, t, sequence_parallel, recompute) + extra


def act_selective_keeps_scores(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1,
                               sequence_parallel=False, recompute="none"):
    if recompute == "selective":
        recompute = "none"
    return _act_oracle(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, sequence_parallel, recompute)


def act_full_is_zero(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                     recompute="none"):
    if recompute == "full":
        return 0.0
    return _act_oracle(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, sequence_parallel, recompute)


def act_elements(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, sequence_parallel=False,
                 recompute="none"):
    return _act_oracle(seq_len, batch_size, hidden_size, n_heads, tensor_parallel, sequence_parallel, recompute) / 2


register(Exercise(
    name="activation_bytes_per_layer",
    chapter="scale/training_memory",
    signature="activation_bytes_per_layer(seq_len, batch_size, hidden_size, n_heads, tensor_parallel=1, "
              "sequence_parallel=False, recompute='none') -> float",
    oracle=_act_oracle,
    cases=_act_cases,
    hints=(
        "write the bytes as sbh times (a linear part + a part for the attention matrix, proportional to s); "
        "parallelism and recomputation each change one of the two   (eq. tm-act)",
        "linear part: 10 + 24/t with tensor parallelism alone (10 sbh stay whole on every GPU), 34/t with "
        "sequence parallelism; score part 5as/(ht), gone with selective recomputation; full recomputation keeps "
        "the layer input only",
        "none: sbh(10 + 24/t + 5as/(ht)), with SP sbh(34/t + 5as/(ht)); selective: drop the 5as/(ht) term; "
        "full: 2sbh   (eq. tm-act, Korthikanti et al. 2022, Table 2)",
    ),
    mistakes=[
        Mistake("forgot the attention scores", act_no_scores,
                "you left out the 5as^2b bytes of the attention matrix (softmax output 2, dropout mask 1, dropout "
                "output 2 bytes per score): the term that grows with s^2."),
        Mistake("sequence parallelism ignored", act_ignores_sp,
                "sequence parallelism also splits the 10sbh that tensor parallelism leaves whole on every GPU (the "
                "two LayerNorm inputs, the QKV projection input and the MLP up-projection input, the two post-block "
                "dropout masks) over the t GPUs: 34/t, not 10 + 24/t."),
        Mistake("tensor parallelism splits everything", act_tp_splits_all,
                "tensor parallelism alone leaves 10sbh whole on every GPU: the two LayerNorm inputs (2 + 2), the "
                "QKV projection input and the MLP up-projection input (2 + 2: the LayerNorm outputs, which a "
                "column-parallel layer keeps whole) and the two post-block dropout masks (1 + 1); only with "
                "sequence parallelism does all of 34sbh divide by t."),
        Mistake("attention scores not split", act_scores_not_split,
                "tensor parallelism splits the heads, so each GPU keeps a/t heads' scores: 5as/(ht), not 5as/h."),
        Mistake("selective keeps the scores", act_selective_keeps_scores,
                "selective recomputation recomputes exactly the attention core (QK^T, softmax, dropout, xV), so "
                "its 5as^2b bytes are not stored: drop that term."),
        Mistake("full recompute stores nothing", act_full_is_zero,
                "full recomputation still stores each layer's input (2sbh bytes) to restart the forward pass from."),
        Mistake("elements, not bytes", act_elements,
                "you counted elements: 16-bit activations take 2 bytes each (the 34 and 5 of Table 2 are "
                "already bytes, dropout masks 1 byte)."),
    ],
))
