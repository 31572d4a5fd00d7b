"""Scripted language models: stand-ins for `DecoderLM` whose next-token logits are a known function of the
whole prefix, so that decoding code (greedy, sampling, beam search, the KV cache) can be graded exactly.

    model = ScriptedLM(vocab_size=11, seed=3, eos_token_id=10, eos_after={(4, 1, 7): 2})
    logits, kvs = model(input_ids)               # (B, T, V), [(k, v)] * n_layers
    logits, kvs = model(next_ids, kvs)           # the same logits as feeding the whole sequence again
    model.calls                                  # [3 tokens without a cache, 1 token with a cache of 3]

The call is DecoderLM's: `model(input_ids, past_kvs=None) -> (logits, kvs)`, `kvs` a list with one (k, v) per
layer, k and v of shape (B, n_kv_heads, S, head_dim). The cache *encodes the prefix*: every key holds the token
id of its position and every value the position itself, so a model fed only the new tokens plus the cache sees
the same prefix as one fed the whole sequence, and a cache that was altered (re-fed tokens, stale, concatenated
twice) is noticed. Code that inspects shapes or reorders rows of the cache (beam search) works as with the
real model.

The logits at a position depend only on the tokens up to and including it: a seeded 64-bit hash of the
prefix gives each token a value in [-spread/2, spread/2), so exact ties never happen by chance. A case
designs the rest: `eos_after` makes eos the clear argmax at chosen steps, `eos_bias` shifts eos elsewhere
(very negative: greedy never picks it), `script` overrides the logits of chosen prefixes (designed ties).

Every call is recorded in `model.calls` (how many tokens were fed, with a cache of which length), so a
grader sees a cache that is not used, an extra forward, or a prompt fed token by token. Misuse (a float or
1-D `input_ids`, token ids outside the vocabulary, a cache of the wrong shape) raises an exception whose
message says what the model expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..i18n import msg, tr

MASK = (1 << 64) - 1
CALL = "model(input_ids, past_kvs=None)"


@dataclass(frozen=True)
class Fed:
    """What one call of the model received: `tokens` new positions, on top of a cache of `cache` positions
    (None: no cache). Its repr is what a report shows: '1 token with a cache of 6'."""

    tokens: int
    cache: int | None = None

    def __repr__(self) -> str:        # in the reader's language: a report shows it inside a message
        if self.cache is None:
            said = msg("1 token without a cache") if self.tokens == 1 else msg("{n} tokens without a cache",
                                                                                n=self.tokens)
        else:
            said = (msg("1 token with a cache of {cache}", cache=self.cache) if self.tokens == 1 else
                    msg("{n} tokens with a cache of {cache}", n=self.tokens, cache=self.cache))
        return tr(said)


def mix(z: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class ScriptedLM(nn.Module):
    """A deterministic language model over `vocab_size` tokens with DecoderLM's call and cache layout.

    seed          chooses the hash: two models with the same arguments give the same logits
    spread        the logits of a prefix lie in [-spread/2, spread/2)
    eos_token_id  the end-of-sequence token, or None
    eos_bias      added to eos's logit wherever no `eos_after` rule applies (-inf-like: never chosen greedily)
    eos_after     {prompt (tuple of ids): k}: after that prompt, the k-th new token is eos (eos's logit becomes
                  the largest by 1.0 at the prefix prompt + k-1 generated tokens, whatever they are)
    script        {prefix (tuple of ids): [V logits]}: the logits after exactly that prefix
    """

    def __init__(self, vocab_size: int = 11, seed: int = 0, spread: float = 4.0, eos_token_id: int | None = None,
                 eos_bias: float = 0.0, eos_after: dict | None = None, script: dict | None = None,
                 n_layers: int = 2, n_kv_heads: int = 2, head_dim: int = 3, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.vocab_size, self.seed, self.spread = vocab_size, seed, spread
        self.eos_token_id, self.eos_bias = eos_token_id, eos_bias
        self.eos_after = dict(eos_after or {})
        self.script = {tuple(k): list(v) for k, v in (script or {}).items()}
        self.n_layers, self.n_kv_heads, self.head_dim, self.dtype = n_layers, n_kv_heads, head_dim, dtype
        # code that asks `next(model.parameters()).device` or `.dtype` finds an answer, as with DecoderLM
        self.anchor = nn.Parameter(torch.zeros(1, dtype=dtype), requires_grad=False)
        self.calls: list[Fed] = []

    def __repr__(self) -> str:
        return f"ScriptedLM(vocab_size={self.vocab_size})"

    # -- the logits: a function of the prefix
    def next_logits(self, prefix) -> list[float]:
        """The logits after `prefix` (a sequence of token ids): what the model predicts for the next token."""
        prefix = tuple(int(t) for t in prefix)
        if prefix in self.script:
            return list(self.script[prefix])
        h = mix(self.seed)
        for t in prefix:
            h = mix(h ^ (t + 1))
        return self._from_hash(h, prefix)

    def _from_hash(self, h: int, prefix: tuple) -> list[float]:
        if prefix in self.script:
            return list(self.script[prefix])
        V, eos = self.vocab_size, self.eos_token_id
        logits = [self.spread * (mix(h ^ mix(v + 0x51ED)) / 2.0**64 - 0.5) for v in range(V)]
        if eos is not None:
            others = max(x for v, x in enumerate(logits) if v != eos) if V > 1 else 0.0
            if any(len(prefix) == len(p) + k - 1 and prefix[:len(p)] == tuple(p) for p, k in self.eos_after.items()):
                logits[eos] = others + 1.0
            else:
                logits[eos] += self.eos_bias
        return logits

    def row_logits(self, row) -> list[list[float]]:
        """The logits after every prefix of `row`: row_logits(row)[t] = next_logits(row[:t+1])."""
        h, out = mix(self.seed), []
        for t in range(len(row)):
            h = mix(h ^ (int(row[t]) + 1))
            out.append(self._from_hash(h, tuple(int(x) for x in row[:t + 1])))
        return out

    # -- DecoderLM's call
    def forward(self, input_ids, past_kvs=None, **unexpected):
        if unexpected:
            name = next(iter(unexpected))
            raise TypeError(msg("{call} has no argument {name!r}: the model's call is DecoderLM's, "
                                "model(input_ids, past_kvs) -> (logits, kvs)", call=CALL, name=name))
        ids = self._check_ids(input_ids)
        B, T = ids.shape
        past = self._read_cache(past_kvs, B)
        S = 0 if past is None else past.shape[1]
        self.calls.append(Fed(T, None if past is None else S))
        seqs = ids.long() if past is None else torch.cat([past, ids.long()], dim=1)
        logits = torch.tensor([self.row_logits(row.tolist())[S:] for row in seqs], dtype=self.dtype)
        return logits, self._cache(seqs)

    def _check_ids(self, ids) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            raise TypeError(msg("{call}: input_ids must be a torch.Tensor of token ids of shape (B, T); got a {type}",
                                call=CALL, type=type(ids).__name__))
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(msg("{call}: input_ids must hold integer token ids (torch.long); got {dtype}: append the "
                                "chosen token ids (argmax / multinomial give int64), not logits or probabilities, "
                                "and do not mix float tensors into torch.cat", call=CALL, dtype=ids.dtype))
        if ids.dim() != 2:
            extra = (": feed the new tokens as a (B, 1) tensor, e.g. next_token[:, None]" if ids.dim() == 1 else
                     ": squeeze the extra axis" if ids.dim() == 3 else "")
            raise ValueError(msg("{call}: input_ids must have shape (B, T); got shape {shape}{extra}", call=CALL,
                                 shape=tuple(ids.shape), extra=extra))
        if ids.shape[1] == 0:
            raise ValueError(msg("{call}: input_ids of shape {shape} holds no token to feed", call=CALL,
                                 shape=tuple(ids.shape)))
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(msg("{call}: token id {id} is outside the vocabulary [0, {vocab})", call=CALL,
                                 id=int(ids[bad][0]), vocab=self.vocab_size))
        return ids

    def _read_cache(self, past, B: int) -> torch.Tensor | None:
        """The token ids the cache holds, (B, S), or None for no cache; a clear error for a cache this model
        did not return."""
        if past is None or (isinstance(past, (list, tuple)) and len(past) == 0):
            return None
        L, H, D = self.n_layers, self.n_kv_heads, self.head_dim
        shape_ok = (isinstance(past, (list, tuple)) and len(past) == L
                    and all(isinstance(kv, (list, tuple)) and len(kv) == 2
                            and all(isinstance(t, torch.Tensor) for t in kv) for kv in past))
        if not shape_ok:
            raise TypeError(msg("{call}: past_kvs must be the kvs the model returned: a list with one (k, v) per "
                                "layer ({layers} layers); got {got}", call=CALL, layers=L, got=_sketch(past)))
        k0 = past[0][0]
        if k0.dim() != 4 or k0.shape[0] != B or k0.shape[1] != H or k0.shape[3] != D:
            raise ValueError(msg("{call}: past_kvs holds keys of shape {shape}; for input_ids with {B} row(s) this "
                                 "model's cache is (B={B}, n_kv_heads={H}, S, head_dim={D})", call=CALL,
                                 shape=tuple(k0.shape), B=B, H=H, D=D))
        S = k0.shape[2]
        tokens = k0[:, 0, :, 0]
        expected = self._cache(tokens.round().long().clamp(0, self.vocab_size - 1))
        if tokens.dtype != self.dtype or not all(k.shape == ke.shape and v.shape == ve.shape and torch.equal(k, ke)
                                                 and torch.equal(v, ve) for (k, v), (ke, ve) in zip(past, expected)):
            raise ValueError(msg("{call}: past_kvs is not a cache this model returned (its {S} positions were "
                                 "changed, reordered or concatenated): pass back the kvs of the previous call "
                                 "as they are: they already hold every earlier position", call=CALL, S=S))
        return tokens.round().long()

    def _cache(self, seqs: torch.Tensor) -> list:
        """The cache after `seqs` (B, S): keys hold the token ids, values the positions."""
        B, S = seqs.shape
        k = seqs.to(self.dtype)[:, None, :, None].expand(B, self.n_kv_heads, S, self.head_dim).contiguous()
        v = torch.arange(S, dtype=self.dtype)[None, None, :, None].expand(B, self.n_kv_heads, S,
                                                                         self.head_dim).contiguous()
        return [(k.clone(), v.clone()) for _ in range(self.n_layers)]


def _sketch(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return msg("a tensor of shape {shape}", shape=tuple(obj.shape))
    if isinstance(obj, (list, tuple)):
        return msg("a {name} of {n}", name=type(obj).__name__, n=len(obj))
    return msg("a {name}", name=type(obj).__name__)
