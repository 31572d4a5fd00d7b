"""Part 6 (scale): the grader's meta-device model builder against published totals and real modules, the
formula oracles against the papers' numbers, bad inputs and properties specific to counting exercises."""

import dataclasses

import pytest
import torch
import torch.nn as nn

from utils.configs import GPT2, GPT3_175B, LLAMA2_7B, PRESETS, PUBLISHED_PARAMS, TransformerConfig
from utils.grader import get, run
from utils.grader.exercises.scale.parameter_count import (
    build_meta_model,
    module_params,
    non_embedding_params,
    random_config,
)

SCALE = ["count_params", "count_lstm_params", "count_conv2d_params", "training_flops_per_token",
         "model_state_bytes", "activation_bytes_per_layer", "kv_cache_bytes"]


# --------------------------------------------------------------------------- the builder

@pytest.mark.parametrize("name", list(PRESETS))
def test_builder_matches_published_totals(name):
    assert module_params(build_meta_model(PRESETS[name])) == PUBLISHED_PARAMS[name]


def test_builder_named_examples():
    assert module_params(build_meta_model(LLAMA2_7B)) == 6_738_415_616
    assert module_params(build_meta_model(GPT2)) == 124_439_808
    untied = dataclasses.replace(GPT2, tie_word_embeddings=False)
    assert module_params(build_meta_model(untied)) == 124_439_808 + 50257 * 768
    assert round(module_params(build_meta_model(GPT3_175B)) / 1e9, 1) == 174.6


def test_builder_allocates_nothing_and_ties():
    model = build_meta_model(GPT2)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.lm_head.weight is model.embed_tokens.weight
    assert model.embed_positions.weight.shape == (1024, 768)


def test_builder_shapes_follow_every_field():
    cfg = TransformerConfig(vocab_size=50, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                            num_attention_heads=6, num_key_value_heads=2, head_dim=5, qkv_bias=True,
                            out_bias=True, mlp_bias=True, gated_mlp=False, norm="layernorm")
    blk = build_meta_model(cfg).layers[0]
    assert blk.q_proj.weight.shape == (30, 24) and blk.q_proj.bias.shape == (30,)
    assert blk.k_proj.weight.shape == (10, 24) and blk.v_proj.bias.shape == (10,)
    assert blk.o_proj.weight.shape == (24, 30) and blk.o_proj.bias is not None
    assert not hasattr(blk, "gate_proj") and blk.up_proj.bias.shape == (40,)
    assert isinstance(blk.attn_norm, nn.LayerNorm) and blk.attn_norm.bias is not None
    with pytest.raises(ValueError):
        build_meta_model(dataclasses.replace(cfg, norm="batchnorm"))


def test_random_configs_cover_every_field():
    cfgs = [random_config(s) for s in range(24)]
    for f in dataclasses.fields(TransformerConfig):
        values = {getattr(c, f.name) for c in cfgs}
        assert len(values) >= 2, f"random configs never vary {f.name}"
    assert any(c.num_key_value_heads not in (None, c.num_attention_heads) for c in cfgs)


def test_builder_matches_a_real_cpu_model():
    """The meta builder counts what the same model allocated on the CPU counts."""
    cfg = random_config(3)
    from utils.grader.exercises.scale.parameter_count import MetaTransformer
    real = MetaTransformer(cfg, device="cpu")
    assert module_params(real) == module_params(build_meta_model(cfg))


def test_non_embedding_excludes_vocabulary_and_positions():
    for cfg in (GPT2, LLAMA2_7B):
        embed = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
        embed += cfg.learned_positions * cfg.hidden_size
        assert non_embedding_params(cfg) == PUBLISHED_PARAMS["GPT-2 (124M)" if cfg is GPT2 else "Llama-2-7B"] - embed


# --------------------------------------------------------------------------- the other oracles

@pytest.mark.parametrize("args", [(10, 20, 1, True, False), (8, 12, 3, False, True), (5, 7, 2, True, True)])
def test_lstm_oracle_is_nn_lstm_on_cpu(args):
    n_in, h, layers, bias, bi = args
    real = nn.LSTM(n_in, h, num_layers=layers, bias=bias, bidirectional=bi)
    assert get("count_lstm_params").oracle(*args) == sum(p.numel() for p in real.parameters())


@pytest.mark.parametrize("args", [(3, 64, 3, True, 1), (12, 24, (1, 7), False, 3), (32, 32, 3, True, 32)])
def test_conv_oracle_is_nn_conv2d_on_cpu(args):
    c_in, c_out, k, bias, g = args
    real = nn.Conv2d(c_in, c_out, k, bias=bias, groups=g)
    assert get("count_conv2d_params").oracle(*args) == sum(p.numel() for p in real.parameters())


def test_zero_paper_example():
    """Rajbhandari et al. 2020, Figure 1: 7.5B parameters on 64 GPUs, 120 / 31.4 / 16.6 / 1.88 GB."""
    oracle = get("model_state_bytes").oracle
    got = [round(oracle(7.5e9, stage, 64) / 1e9, 2) for stage in range(4)]
    assert got == [120.0, 31.41, 16.64, 1.88]


def test_activation_table_rows():
    """Korthikanti et al. 2022, Table 2, row by row, for GPT-3's layer (s=2048, b=1, h=12288, a=96), t=8."""
    act = get("activation_bytes_per_layer").oracle
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    sbh = s * b * h
    assert act(s, b, h, a) == sbh * (34 + 5 * a * s / h)
    assert act(s, b, h, a, t) == pytest.approx(sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    assert act(s, b, h, a, t, True) == pytest.approx(sbh * (34 / t + 5 * a * s / (h * t)))
    assert act(s, b, h, a, t, False, "selective") == pytest.approx(sbh * (10 + 24 / t))
    assert act(s, b, h, a, t, True, "selective") == pytest.approx(sbh * 34 / t)
    assert act(s, b, h, a, t, True, "full") == 2 * sbh
    with pytest.raises(ValueError):
        act(s, b, h, a, recompute="partial")


def test_kv_oracle_is_exact_int():
    kv = get("kv_cache_bytes").oracle
    assert kv(1, 4096, 32, 32, 128) == 2 * 4096 * 32 * 32 * 128 * 2 == 2 * 2**30
    assert isinstance(kv(1, 4096, 32, 8, 128), int)
    assert kv(3, 5, 7, 2, 8, 0.5) == 2 * 3 * 5 * 7 * 2 * 8 * 0.5


def test_flops_oracle_counts_kaplan_terms():
    ex = get("training_flops_per_token")
    cfg = LLAMA2_7B
    n = PUBLISHED_PARAMS["Llama-2-7B"] - 2 * cfg.vocab_size * cfg.hidden_size
    assert ex.oracle(cfg, 4096) == 6 * n + 6 * 32 * 4096 * 4096


# --------------------------------------------------------------------------- the book's solutions, bad inputs

def test_solutions_pass(book):
    for name in SCALE:
        chapter = get(name).chapter
        assert run(name, book(chapter)[name]).passed, name


def test_count_params_rejects_float_and_tensor(book):
    sol = book("scale/parameter_count")["count_params"]
    for wrong in (lambda cfg: float(sol(cfg)), lambda cfg: torch.tensor(sol(cfg))):
        report = run("count_params", wrong)
        assert not report.passed and report.kind == "wrong-type"


def test_count_params_unresolved_none_is_an_error():
    def uses_raw_fields(cfg):
        d = cfg.hidden_size
        kv = cfg.num_key_value_heads * cfg.head_dim          # TypeError when either is None
        return cfg.vocab_size * d + kv
    report = run("count_params", uses_raw_fields)
    assert not report.passed and report.kind == "exception" and "TypeError" in report.failure.problem.message


def test_building_modules_is_forbidden():
    report = run("count_conv2d_params", lambda *a, **k: sum(p.numel() for p in nn.Conv2d(*a, **k).parameters()))
    assert not report.passed and report.kind == "forbidden-call"


def test_count_params_layer_property_catches_nonlinear_depth(book):
    sol = book("scale/parameter_count")["count_params"]

    def memo(cfg):       # right on every case, but grows quadratically in depth off the cases
        base = sol(cfg)
        return base if cfg.vocab_size != 100 or cfg.intermediate_size != 64 or cfg.hidden_size != 32 \
            or cfg.num_hidden_layers < 3 else base + cfg.num_hidden_layers ** 2
    report = run("count_params", memo)
    assert not report.passed and report.kind == "property"


def test_kv_linearity_property():
    def kv_wrong_off_cases(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
        exact = 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element
        return exact + (seq_len == 2000)
    report = run("kv_cache_bytes", kv_wrong_off_cases)
    assert not report.passed and report.kind == "property"


def test_kv_float_for_int_is_rejected(book):
    sol = book("scale/inference_memory")["kv_cache_bytes"]
    report = run("kv_cache_bytes", lambda *a, **k: float(sol(*a, **k)))
    assert not report.passed and report.kind == "wrong-type"


def test_zero_stage_property_catches_no_partitioning():
    def stage0_only_on_case_grid(n, zero_stage=0, n_gpus=1):
        oracle = get("model_state_bytes").oracle
        return 16 * n if n_gpus == 16 else oracle(n, zero_stage, n_gpus)
    report = run("model_state_bytes", stage0_only_on_case_grid)
    assert not report.passed and report.kind == "property"


# --------------------------------------------------------------------------- errata (issue 12)

def test_activation_terms_add_up_to_table_2():
    """Korthikanti et al. 2022: the per-term accounting of section 4.1 gives the 34, the 10 and the 24 of Table 2."""
    from utils.grader.exercises.scale import training_memory as tm
    assert (tm.WHOLE_SBH, tm.SPLIT_SBH, tm.SCORES_AS2B) == (10, 24, 5)
    whole = [name for name, (_, _, split) in tm.ACTIVATION_TERMS.items() if not split]
    assert len(whole) == 6 and sum(tm.ACTIVATION_TERMS[n][0] for n in whole) == 10
    assert all(tm.ACTIVATION_TERMS[n][1] == 0 for n in whole)           # the attention matrix is all split


@pytest.mark.parametrize("mistake", ["sequence parallelism ignored", "tensor parallelism splits everything"])
def test_tensor_parallel_diagnoses_name_every_replicated_term(mistake):
    """The 10 sbh are the two LayerNorm inputs, the QKV and MLP up-projection inputs and two dropout masks."""
    message = next(m.message for m in get("activation_bytes_per_layer").mistakes if m.name == mistake)
    for term in ("LayerNorm inputs", "QKV projection input", "MLP up-projection input", "dropout masks", "10sbh"):
        assert term in message, (mistake, term)


def test_flops_attention_share_at_4k_is_8_percent_for_llama2_7b():
    """The flops chapter quotes 8.3%: the attention term over 6N for Llama-2-7B at T = 4096."""
    total = get("training_flops_per_token").oracle(LLAMA2_7B, 4096)
    six_n = 6 * non_embedding_params(LLAMA2_7B)
    assert round((total - six_n) / six_n, 3) == 0.083


def test_gemma_7b_ties_its_embeddings_and_matches_its_report():
    """Gemma Team 2024, Table 2: 7,751,248,896 non-embedding parameters; the embeddings are shared."""
    from utils.configs import GEMMA_7B
    model = build_meta_model(GEMMA_7B)
    assert model.lm_head.weight is model.embed_tokens.weight
    assert non_embedding_params(GEMMA_7B) == 7_751_248_896
    assert module_params(model) == 7_751_248_896 + GEMMA_7B.vocab_size * GEMMA_7B.hidden_size


@pytest.mark.parametrize("chapter,wrong", [
    ("flops", "a few percent at $T = 4096$"),
    ("flops", "attention is a few percent of a 7B model"),
    ("inference_memory", "about 0.5-3% for group size 128"),
    ("parameter_count", "At 7B it is a few percent and models keep them apart"),
    ("training_memory", "the LayerNorm\ninputs and the two post-block dropouts ($10 sbh$) stay replicated"),
])
def test_corrected_claims_stay_corrected(chapter, wrong):
    from pathlib import Path

    import nbformat
    nb = nbformat.read(Path(__file__).resolve().parent.parent / "chapters" / "scale" / f"{chapter}.ipynb", as_version=4)
    assert not any(wrong in c.source for c in nb.cells), f"scale/{chapter} states again: {wrong!r}"
