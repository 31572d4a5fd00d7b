"""Part 5, building an LLM: the decoder-only language model and its loss (chapter llm/causal_lm).

DecoderLM is graded like the block below it: scripts of forward calls (the whole sequence, then chunks fed the
caches of every layer) on a model loaded with random non-default weights, tied and untied. Its oracle stacks
`TransformerBlockSpec` (transformer_block.py); tests/test_llm.py proves the stack equal to transformers'
`LlamaForCausalLM` given the same weights.

causal_lm_loss's oracle is a plain loop over positions: position t of row b predicts token t + 1, in float64
with logsumexp; tests/test_llm.py proves it equal to transformers' shifted loss (`ForCausalLMLoss`).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ....configs import TransformerConfig, build_meta_model, module_params
from ....i18n import msg
from ...core import Case, Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn, transposed
from ...kinds import ModuleExercise, Script, Step
from ...registry import register
from .transformer_block import ROPE_BUFFERS, TOLERANCE, TransformerBlockSpec, trained_scale

# --------------------------------------------------------------------------- DecoderLM: the oracle


class DecoderLMSpec(nn.Module):
    """Embedding, n_layers TransformerBlockSpec, a final RMSNorm and the LM head (embed.weight itself when tied)."""

    def __init__(self, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5,
                 tie_embeddings=False, interleaved=False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(TransformerBlockSpec(d_model, n_heads, n_kv_heads, d_ff, rope_base, eps,
                                                         interleaved) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model, eps=eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, input_ids, past_kvs=None):
        h = F.embedding(input_ids, self.embed.weight)
        caches = []
        for i, layer in enumerate(self.layers):
            h, kv = layer(h, None if past_kvs is None else past_kvs[i])
            caches.append(kv)
        return F.linear(self.norm(h), self.lm_head.weight), caches


# --------------------------------------------------------------------------- DecoderLM: cases

class Caches(list):
    """The per-layer caches fed back to the model: a plain list to the reader's code, shown in reports by the
    shape of its first key instead of every value."""

    def __repr__(self):
        first = self[0] if self else None
        if isinstance(first, (tuple, list)) and first and isinstance(first[0], torch.Tensor):
            return f"[{len(self)} x (k, v), k {tuple(first[0].shape)}]"
        return super().__repr__()


def _caches_of(prev):
    """The caches returned by the previous call, or whatever came back (so that a wrong return fails there)."""
    last = prev[-1] if prev else None
    caches = last[1] if isinstance(last, (tuple, list)) and len(last) == 2 else last
    return Caches(caches) if isinstance(caches, list) else caches


def _ids(B, T, vocab, seed, noncontig=False):
    g = torch.Generator().manual_seed(seed)
    if noncontig:
        return torch.randint(0, vocab, (B, 2 * T), generator=g)[:, ::2]
    return torch.randint(0, vocab, (B, T), generator=g)


def _lm_script(init, chunks, *, B=2, seed=0, one_call=True, grad=False, dtype=None, noncontig=False, **kwargs):
    """`init` = (vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff): one call over the whole sequence
    (optional), then the same sequence in `chunks`, each call fed the caches the previous one returned."""
    ids = _ids(B, sum(chunks), init[0], seed, noncontig)
    steps = [Step(call(ids), grad=grad)] if one_call else []
    start = 0
    for i, n in enumerate(chunks):
        chunk = ids[:, start:start + n]
        if i == 0:
            steps.append(Step(call(chunk)))
        else:
            steps.append(Step(lambda prev, c=chunk: call(c, past_kvs=_caches_of(prev)), grad=grad))
        start += n
    return Script(init=(init, kwargs), steps=steps, dtype=dtype)


def _lm_cases():
    return [
        Case(partial(_lm_script, (50, 32, 2, 4, 2, 48), [6]), "2 layers, GQA 4/2, untied, one call"),
        Case(partial(_lm_script, (50, 32, 2, 4, 2, 48), [3, 2, 2], seed=1),
             "one call, then chunks of 3, 2, 2 with the caches of both layers"),
        Case(partial(_lm_script, (40, 24, 2, 6, 3, 40), [4, 1, 1, 1], seed=2, tie_embeddings=True),
             "tied embeddings: lm_head.weight is embed.weight; prefill 4, then token by token"),
        Case(partial(_lm_script, (50, 32, 3, 8, 1, 40), [2, 4], seed=3), "3 layers, MQA (n_kv_heads=1), chunks 2, 4"),
        Case(partial(_lm_script, (30, 16, 1, 2, 2, 24), [3, 2], seed=4),
             "1 layer, MHA (n_kv_heads=n_heads), chunks 3, 2"),
        Case(partial(_lm_script, (50, 32, 2, 4, 2, 48), [4, 3], seed=5, interleaved=True, rope_base=100.0),
             "interleaved=True and rope_base=100, chunks 4, 3"),
        Case(partial(_lm_script, (50, 16, 2, 4, 2, 24), [3, 2], seed=6, eps=1e-2),
             "eps=1e-2: it reaches the norms of every block and the final norm"),
        Case(partial(_lm_script, (50, 24, 2, 4, 2, 32), [3, 3], seed=7, dtype=f64, tie_embeddings=True),
             "float64, tied"),
        Case(partial(_lm_script, (50, 32, 2, 4, 2, 48), [1, 1, 1, 1], B=1, seed=8, noncontig=True),
             "batch of one, non-contiguous input_ids, one token per call from the start"),
        Case(partial(_lm_script, (40, 16, 2, 4, 2, 24), [3, 2], B=1, seed=9, grad=True, dtype=f64,
                     tie_embeddings=True), "gradients of every parameter, tied (float64)"),
    ]


# --------------------------------------------------------------------------- DecoderLM: properties

def _counts_like_its_config(call):
    for tie in (False, True):
        model = call(64, 32, 3, 4, 2, 88, tie_embeddings=tie)
        cfg = TransformerConfig(vocab_size=64, hidden_size=32, intermediate_size=88, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
        got, expected = sum(p.numel() for p in model.parameters()), module_params(build_meta_model(cfg))
        if got != expected:
            return msg("with tie_embeddings={tie} your model has {got:,} parameters; its TransformerConfig describes "
                       "{expected:,}", tie=tie, got=got, expected=expected)
    return None


def _lm_causal(call):
    model = call(30, 16, 2, 4, 2, 24)
    ids = _ids(1, 7, 30, seed=50)
    later = ids.clone()
    later[:, 5:] = (later[:, 5:] + 1) % 30
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(later)
    change = float((a[:, :5] - b[:, :5]).abs().max())
    if change > 1e-5:
        return msg("changing tokens 5 and 6 changed the logits of tokens 0-4 by {change:.3g}", change=change)
    return None


# --------------------------------------------------------------------------- DecoderLM: mistakes, one flaw each

class _LM(DecoderLMSpec):
    def embed_tokens(self, input_ids):
        return self.embed(input_ids)

    def past_for(self, past_kvs, i):
        return None if past_kvs is None else past_kvs[i]

    def head(self, h):
        return self.lm_head(self.norm(h))

    def forward(self, input_ids, past_kvs=None):
        h, caches = self.embed_tokens(input_ids), []
        for i, layer in enumerate(self.layers):
            h, kv = layer(h, self.past_for(past_kvs, i))
            caches.append(kv)
        return self.head(h), caches


class TieIgnored(_LM):
    def __init__(self, *args, tie_embeddings=False, **kwargs):
        super().__init__(*args, **kwargs)


class OneBlockForAllLayers(_LM):
    def __init__(self, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5,
                 tie_embeddings=False, interleaved=False):
        super().__init__(vocab_size, d_model, 1, n_heads, n_kv_heads, d_ff, rope_base, eps, tie_embeddings,
                         interleaved)
        self.layers = nn.ModuleList([self.layers[0]] * n_layers)


class NoFinalNorm(_LM):
    def head(self, h):
        return self.lm_head(h)


class ScaledEmbedding(_LM):
    def embed_tokens(self, input_ids):
        return self.embed(input_ids) * math.sqrt(self.embed.weight.shape[1])


class PastIgnored(_LM):
    def past_for(self, past_kvs, i):
        return None


class FirstLayerCacheEverywhere(_LM):
    def past_for(self, past_kvs, i):
        return None if past_kvs is None else past_kvs[0]


class HeadReadsEmbedding(_LM):
    def head(self, h):
        return self.norm(h) @ self.embed.weight.T


class ReturnsProbabilities(_LM):
    def head(self, h):
        return torch.softmax(self.lm_head(self.norm(h)), dim=-1)


register(ModuleExercise(
    name="DecoderLM",
    chapter="llm/causal_lm",
    signature=("DecoderLM(vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, rope_base=10000.0, eps=1e-5, "
               "tie_embeddings=False, interleaved=False); forward(input_ids, past_kvs=None)"),
    oracle=DecoderLMSpec,
    cases=_lm_cases,
    randomize=trained_scale,
    extra_buffers=ROPE_BUFFERS,
    tolerance=TOLERANCE,
    properties=[
        Property("the parameter count equals that of the model its TransformerConfig describes, tied and untied",
                 _counts_like_its_config),
        Property("no token sees the future: changing tokens 5 and 6 leaves the logits of tokens 0-4 alone",
                 _lm_causal),
    ],
    hints=("look up the embeddings, run the blocks in order (each with its own cache), normalise, project to the "
           "vocabulary; a tied head is the embedding matrix itself   (eqs. lm-forward, lm-tied)",
           "layer i gets past_kvs[i] (None when past_kvs is None) and returns its new (k, v): collect them in a list "
           "in layer order; the logits are lm_head(norm(h)), never a softmax",
           "x = embed(input_ids); for i, layer: x, kv_i = layer(x, past_kvs[i] if past_kvs else None); "
           "logits = lm_head(norm(x)); tie with self.lm_head.weight = self.embed.weight   (eqs. lm-forward, lm-tied)"),
    mistakes=[
        Mistake("tie_embeddings ignored", TieIgnored,
                "with tie_embeddings=True your model keeps its own lm_head.weight: tying means one matrix, "
                "self.lm_head.weight = self.embed.weight (a copy or a clone is a second parameter)."),
        Mistake("one block shared by every layer", OneBlockForAllLayers,
                "your layers are one block repeated ([block] * n_layers shares its weights): build n_layers blocks, "
                "nn.ModuleList(TransformerBlock(...) for _ in range(n_layers))."),
        Mistake("no final norm", NoFinalNorm,
                "the LM head reads the last block's output without the final norm: a pre-norm stack leaves the "
                "residual stream unnormalised, so logits = lm_head(norm(h))."),
        Mistake("embeddings scaled by sqrt(d_model)", ScaledEmbedding,
                "you multiply the embeddings by sqrt(d_model) (the 2017 Transformer's habit); Llama feeds embed(ids) "
                "to the first block as it is."),
        Mistake("past_kvs ignored", PastIgnored,
                "your model ignores past_kvs: each call starts from scratch, so a chunk neither sees the earlier "
                "tokens nor gets their positions. Pass past_kvs[i] to layer i."),
        Mistake("every layer gets layer 0's cache", FirstLayerCacheEverywhere,
                "every layer receives past_kvs[0]: each layer has its own keys and values, so layer i must get "
                "past_kvs[i]."),
        Mistake("head reads the embedding matrix", HeadReadsEmbedding,
                "your logits use embed.weight even when the embeddings are not tied: project with lm_head, whose "
                "weight is embed.weight only when tie_embeddings=True."),
        Mistake("returns probabilities", ReturnsProbabilities,
                "you return softmax probabilities; return the logits (the loss applies log-softmax itself, and "
                "sampling divides logits by a temperature)."),
    ],
))


# --------------------------------------------------------------------------- causal_lm_loss: the oracle

def causal_lm_loss_spec(logits, input_ids, ignore_index=-100):
    """Position t of row b predicts token t + 1: the mean over every (b, t) whose target input_ids[b, t + 1] is
    not ignore_index of -log softmax(logits[b, t])[target]. A loop; logsumexp in float64."""
    B, T, _ = logits.shape
    total, count = logits.new_zeros((), dtype=f64), 0
    for b in range(B):
        for t in range(T - 1):
            target = int(input_ids[b, t + 1])
            if target == ignore_index:
                continue
            row = logits[b, t].to(f64)
            total = total + (torch.logsumexp(row, 0) - row[target])
            count += 1
    return (total / count).to(logits.dtype)


# --------------------------------------------------------------------------- causal_lm_loss: cases

def _loss_inputs(B, T, V, *, seed=0, dtype=f32, scale=1.0, noncontig=False, ignored=(), first=None,
                 ignore_index=None):
    """logits (B, T, V) and input_ids (B, T); `ignored` lists (b, t) whose token becomes the ignored id;
    `first`: the id put at position 0 of every row (never a target)."""
    if noncontig:                                           # (B, T, V) seen through (B, V, T)
        logits = transposed(B, T, V, seed=seed, dtype=dtype, scale=scale)
    else:
        logits = randn(B, T, V, seed=seed, dtype=dtype, scale=scale)
    g = torch.Generator().manual_seed(seed + 1)
    low = 1 if ignore_index == 0 else 0                     # the pad id 0 appears only where asked
    ids = torch.randint(low, V, (B, T), generator=g)
    pad = -100 if ignore_index is None else ignore_index
    for b, t in ignored:
        ids[b, t] = pad
    if first is not None:
        ids[:, 0] = first
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    return call(logits, ids, **kwargs)


def _padded(B, T, lengths):
    """(b, t) of the padding after each row's length."""
    return [(b, t) for b, n in enumerate(lengths) for t in range(n, T)]


def _loss_cases():
    return [
        case(_loss_inputs, 2, 5, 7, note="(2, 5, 7), no ignored target"),
        case(_loss_inputs, 3, 6, 11, seed=1, ignored=_padded(3, 6, [6, 4, 2]),
             note="rows of lengths 6, 4, 2 padded with -100: each row has its own number of targets"),
        case(_loss_inputs, 2, 6, 9, seed=2, ignore_index=0, ignored=_padded(2, 6, [3, 6]),
             note="ignore_index=0, the pad id, passed as a keyword"),
        case(_loss_inputs, 2, 5, 8, seed=3, first=-100,
             note="the first token is -100: it is never a target, so nothing changes"),
        case(_loss_inputs, 2, 7, 10, seed=4, dtype=f64, ignored=[(0, 3), (1, 1), (1, 6)],
             note="float64, a few ignored targets in the middle"),
        case(_loss_inputs, 2, 6, 12, seed=5, noncontig=True, note="non-contiguous logits"),
        case(_loss_inputs, 1, 2, 5, seed=6, note="batch of one, two tokens: a single target"),
        case(_loss_inputs, 2, 5, 6, seed=7, scale=1e4, note="logits of order 1e4: finite only with log-softmax"),
        case(_loss_inputs, 2, 5, 7, seed=8, ignored=_padded(2, 5, [5, 1]),
             note="row 1 is all padding after its first token: it contributes no target"),
        case(_loss_inputs, 2, 6, 9, seed=9, dtype=f64, ignored=[(0, 2), (1, 5)], grad=True,
             note="gradient with respect to the logits (float64)"),
    ]


# --------------------------------------------------------------------------- causal_lm_loss: properties

def _last_position_is_free(call):
    logits, ids = randn(2, 5, 6, seed=60), _ids(2, 5, 6, seed=61)
    other = logits.clone()
    other[:, -1] = randn(2, 6, seed=62, scale=3.0)
    a, b = call(logits, ids), call(other, ids)
    if not torch.allclose(a, b):
        return msg("changing the logits of the last position changed the loss from {a:.6g} to {b:.6g}",
                   a=float(a), b=float(b))
    return None


def _uniform_is_log_vocab(call):
    got = float(call(torch.zeros(3, 4, 17), _ids(3, 4, 17, seed=63)))
    if not math.isclose(got, math.log(17), rel_tol=1e-5):
        return msg("uniform logits over 17 tokens should give log 17 = {want:.6g}; got {got:.6g}",
                   want=math.log(17), got=got)
    return None


# --------------------------------------------------------------------------- causal_lm_loss: mistakes

def loss_no_shift(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), input_ids.reshape(-1), ignore_index=ignore_index)


def loss_shift_backwards(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, 1:].reshape(-1, V), input_ids[:, :-1].reshape(-1), ignore_index=ignore_index)


def loss_mean_over_all_positions(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1),
                                ignore_index=ignore_index, reduction="none")
    return per_token.sum() / per_token.numel()


def loss_ignore_index_hard_coded(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1), ignore_index=-100)


def loss_mean_of_row_means(logits, input_ids, ignore_index=-100):
    B, T, V = logits.shape
    targets = input_ids[:, 1:]
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, V), targets.reshape(-1), ignore_index=ignore_index,
                                reduction="none").view(B, T - 1)
    keep = targets != ignore_index
    row_means = per_token.sum(1)[keep.any(1)] / keep.sum(1)[keep.any(1)]
    return row_means.mean()


def loss_log_of_softmax(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    logp = torch.log(torch.softmax(logits[:, :-1], dim=-1)).reshape(-1, V)
    return F.nll_loss(logp, input_ids[:, 1:].reshape(-1), ignore_index=ignore_index)


def loss_summed(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1), ignore_index=ignore_index,
                           reduction="sum")


def loss_view_after_slice(logits, input_ids, ignore_index=-100):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].view(-1, V), input_ids[:, 1:].reshape(-1), ignore_index=ignore_index)


register(Exercise(
    name="causal_lm_loss",
    chapter="llm/causal_lm",
    signature="causal_lm_loss(logits, input_ids, ignore_index=-100)",
    oracle=causal_lm_loss_spec,
    cases=_loss_cases,
    properties=[
        Property("the last position predicts nothing: its logits do not change the loss", _last_position_is_free),
        Property("uniform logits give log(vocab_size)", _uniform_is_log_vocab),
    ],
    hints=("position t predicts token t + 1: pair the logits of positions 0 .. T-2 with the tokens 1 .. T-1, and "
           "average over the targets that are not ignore_index   (eq. lm-loss)",
           "slice first, flatten second: logits[:, :-1] with input_ids[:, 1:]; reshape (not view) to (N, V) and (N,); "
           "F.cross_entropy with ignore_index averages over the kept targets only",
           "F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1), ignore_index=ignore_index)"
           "   (eq. lm-loss)"),
    mistakes=[
        Mistake("no shift", loss_no_shift,
                "your loss has no shift: position t is scored on its own token, input_ids[:, t], which it already "
                "sees. Position t predicts token t + 1: logits[:, :-1] against input_ids[:, 1:]."),
        Mistake("shifted the wrong way", loss_shift_backwards,
                "you shifted the wrong way: logits[:, 1:] against input_ids[:, :-1] asks each position for the token "
                "before it. Use logits[:, :-1] with input_ids[:, 1:]."),
        Mistake("mean over ignored positions", loss_mean_over_all_positions,
                "your mean divides by every position, ignored ones included (they count as zero loss): average over "
                "the targets that are not ignore_index only, as F.cross_entropy(..., ignore_index=...) does."),
        Mistake("ignore_index hard-coded", loss_ignore_index_hard_coded,
                "you always ignore -100, whatever ignore_index says: pass ignore_index=ignore_index on."),
        Mistake("mean of per-row means", loss_mean_of_row_means,
                "you average each row first and then the rows, so a short row weighs as much as a long one: the loss "
                "is one mean over all kept targets of the batch."),
        Mistake("log of softmax", loss_log_of_softmax,
                "you take log(softmax(logits)): for large logits the softmax underflows to 0 and the log gives inf. "
                "Use log_softmax (or F.cross_entropy), which subtracts the row max."),
        Mistake("sum, not mean", loss_summed,
                "your loss is the sum over targets; it is the mean over the targets that are not ignore_index."),
        Mistake("view after slicing", loss_view_after_slice,
                "logits[:, :-1] is not contiguous when the batch has more than one row, so .view(-1, V) fails: use "
                ".reshape(-1, V) (or .contiguous().view)."),
    ],
))
