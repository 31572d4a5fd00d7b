"""Part 8, tokenization: the train_bpe and BPETokenizer graders (utils/grader/exercises/tokenization/bpe.py).

What is proved here, beyond tests/test_exercises.py (the book's solutions pass, every registered mistake is named):
- the oracles agree with the field's reference: given the same vocabulary and merges, the encoding specification,
  the book's BPETokenizer and a `tokenizers` BPE model with GPT-2's byte-level pre-tokenizer give the same ids on
  varied and random text, and the same text back; the training specification agrees with the `tokenizers` trainer
  merge for merge until the first tie, and with values computed by hand; where the conventions of the two differ
  (a prefix space, the tie rule, special tokens skipped when decoding), the difference is stated and checked;
- correct solutions in other styles pass; wrong solutions as candidates write them (not the registered mistakes)
  are rejected without a false diagnosis; bad input gets a clear report and never a crash;
- the cases cover the issue's list; a check costs under a second of CPU; the book's train_bpe trains on about
  1 MB to a vocabulary of 1,000 within 10 CPU seconds; `python -m utils.bench train_bpe` runs.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import random
import re
import time
import unicodedata
from collections import Counter, defaultdict
from functools import cache

import pytest
import regex
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from utils.grader import get, run
from utils.grader.core import evaluate
from utils.grader.exercises.tokenization import bpe as spec
from utils.grader.inputs import call, case
from utils.i18n import speaking

CHAPTER = "tokenization/bpe"
TRAIN, TOKENIZER = get("train_bpe"), get("BPETokenizer")


# =========================================================================== the `tokenizers` library, same vocabulary

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (openai/gpt-2, src/encoder.py): how `tokenizers` stores byte-level
    tokens. Written out here, independently of the chapter."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
U2B = {c: b for b, c in B2U.items()}


def spell(b: bytes) -> str:
    return "".join(B2U[x] for x in b)


def unspell(s: str) -> bytes:
    return bytes(U2B[c] for c in s)


def library_tokenizer(vocab, merges, special_tokens=(), add_prefix_space=False) -> Tokenizer:
    """A `tokenizers` BPE model loaded with our vocabulary and merges, GPT-2's byte-level pre-tokenizer and decoder,
    and our special tokens as added tokens (their ids taken from the vocabulary)."""
    regular = {spell(b): i for i, b in vocab.items() if b not in {s.encode("utf-8") for s in special_tokens}}
    tok = Tokenizer(models.BPE(vocab=regular, merges=[(spell(a), spell(b)) for a, b in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    if special_tokens:
        tok.add_special_tokens([AddedToken(s, normalized=False) for s in special_tokens])
        for s in special_tokens:
            assert tok.token_to_id(s) == next(i for i, b in vocab.items() if b == s.encode("utf-8"))
    return tok


SAMPLE = [
    "The quick brown fox jumps over the lazy dog. Don't panic: it's 42!",
    "def train(model, data):\n    for x, y in data:\n\t\tloss = model(x, y)  # 2 spaces\n\n\n    return loss\n",
    "机器学习是人工智能的一个分支，大语言模型（LLM）需要海量的文本数据。",
    "混合 mixed 文本 text: 2024年3月15日，价格 ¥1,299.00 元；温度 -3.5°C",
    "emoji 😀😀 👍🏽 🇨🇳 and ZWJ 👨‍👩‍👧 families",
    "I'M sure THEY'RE fine, we'll see; you've been told, she'd agree",
    "   leading spaces, trailing spaces   ",
    "naïve café, Ελληνικά, русский, العربية, हिन्दी, 한국어, 日本語のテキスト",
    "x² + y² = z², ½ ⅓ Ⅻ ①②",
    "<|endoftext|>ok<|im_start|>user\n你好<|im_end|><|endoftext|><|endoftext|>",
    "",
    "\n\n\n",
    "a" * 50 + " " + "ab" * 30,
]
SPECIALS = ["<|endoftext|>", "<|endoftext|><|endoftext|>", "<|im_start|>", "<|im_end|>"]


def random_strings(n, seed, specials=True):
    rng = random.Random(seed)
    out = []
    for k in range(n):
        s = spec.random_text(rng.randint(0, 60), seed * 1000 + k)
        if specials and k % 4 == 0:
            s = s[: len(s) // 2] + rng.choice(SPECIALS) + s[len(s) // 2:]
        out.append(s)
    return out


@cache
def _vocabularies():
    """Vocabularies of several sizes, trained by the specification on varied text (Chinese, code, emoji...)."""
    text = spec.TRAINING_TEXT + " ".join(SAMPLE) + spec.random_text(3000, 99)
    return {size: spec.train_bpe_spec(text, size, tuple(SPECIALS)) for size in (256 + 4, 256 + 60, 256 + 300)}


@pytest.mark.parametrize("size", [260, 316, 556])
def test_encoding_spec_gives_the_ids_of_the_tokenizers_library(size):
    vocab, merges = _vocabularies()[size]
    assert len(set(vocab.values())) == len(vocab), "a vocabulary with two ids for the same bytes"
    ours = spec.BPETokenizerSpec(vocab, merges, SPECIALS)
    theirs = library_tokenizer(vocab, merges, SPECIALS)
    for text in SAMPLE + random_strings(150, size):
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids) == text
        assert theirs.decode(ids, skip_special_tokens=False) == text


@pytest.mark.parametrize("size", [260, 316, 556])
def test_book_tokenizer_gives_the_ids_of_the_tokenizers_library(size, book):
    vocab, merges = _vocabularies()[size]
    mine = book(CHAPTER)["BPETokenizer"](vocab, merges, SPECIALS)
    theirs = library_tokenizer(vocab, merges, SPECIALS)
    for text in SAMPLE + random_strings(100, size + 1):
        ids = mine.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text
        assert mine.decode(ids) == text


def test_book_trainer_and_tokenizer_agree_with_the_library_on_a_trained_vocabulary(book):
    ns = book(CHAPTER)
    text = spec.TRAINING_TEXT * 3 + spec.random_text(2000, 5)
    vocab, merges = ns["train_bpe"](text, 256 + 200, ("<|endoftext|>",))
    theirs = library_tokenizer(vocab, merges, ["<|endoftext|>"])
    mine = ns["BPETokenizer"](vocab, merges, ["<|endoftext|>"])
    for s in SAMPLE + random_strings(60, 7, specials=False):
        assert mine.encode(s) == theirs.encode(s, add_special_tokens=False).ids


def test_pre_tokenization_is_the_library_byte_level_pre_tokenizer():
    """GPT-2's pattern in the `regex` package and the library's ByteLevel pre-tokenizer (use_regex=True) cut text
    at the same places; the library then writes each byte as its stand-in character."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    for text in SAMPLE + random_strings(200, 3, specials=False):
        ours = [w.encode("utf-8") for w in spec.pre_tokens(text)]
        theirs = [unspell(piece) for piece, _ in pre.pre_tokenize_str(text)]
        assert ours == theirs, text


def test_decoding_a_cut_character_agrees_with_the_library():
    """Python's errors="replace" and the library's ByteLevel decoder (Rust's from_utf8_lossy) both replace each
    maximal invalid subsequence with one U+FFFD, so they agree on arbitrary bytes."""
    vocab = {i: bytes([i]) for i in range(256)}
    theirs = library_tokenizer(vocab, [])
    rng = random.Random(0)
    for _ in range(2000):
        ids = [rng.choice([rng.randrange(256), rng.randrange(0x80, 0x100), rng.randrange(0xC0, 0xF8)])
               for _ in range(rng.randint(1, 8))]
        assert spec.BPETokenizerSpec(vocab, []).decode(ids) == theirs.decode(ids)
    assert spec.BPETokenizerSpec(vocab, []).decode([230, 156, 186, 229]) == "机\ufffd"


def test_where_the_library_conventions_differ():
    vocab, merges = _vocabularies()[316]
    ours = spec.BPETokenizerSpec(vocab, merges, SPECIALS)
    # 1. The library's ByteLevel pre-tokenizer adds a space before the text by default (add_prefix_space=True), so
    #    'hello' is encoded as ' hello'; GPT-2 and the contract do not.
    default = library_tokenizer(vocab, merges, SPECIALS, add_prefix_space=True)
    assert default.encode("hello", add_special_tokens=False).ids == ours.encode(" hello")
    assert default.encode("hello", add_special_tokens=False).ids != ours.encode("hello")
    # 2. Its decode skips special tokens by default; the contract's decode keeps them.
    theirs = library_tokenizer(vocab, merges, SPECIALS)
    ids = ours.encode("a<|endoftext|>b")
    assert ours.decode(ids) == "a<|endoftext|>b"
    assert theirs.decode(ids) == "ab" and theirs.decode(ids, skip_special_tokens=False) == "a<|endoftext|>b"
    # 3. It stores tokens as strings of stand-in characters, one per byte (' ' is 'Ġ'), not as bytes.
    assert spell(b" the") == "Ġthe" and unspell("Ġthe") == b" the"


# =========================================================================== training against the library and by hand

def library_merges(text, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    found = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(unspell(p) for p in (m if isinstance(m, list) else m.split(" "))) for m in found]


def counts_at_each_merge(text, vocab_size):
    """(merge, the top count, how many pairs share it) at each step of the specification's loop."""
    words = Counter(spec.as_bytes(w) for w in spec.pre_tokens(text))
    steps = []
    for _ in range(vocab_size - 256):
        pairs = Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += n
        if not pairs:
            break
        top = max(pairs.values())
        best = max(pairs, key=lambda p: (pairs[p], p))
        steps.append((best, top, sum(v == top for v in pairs.values()), dict(pairs)))
        words = Counter({spec.merge_pair(w, best): n for w, n in words.items()})
    return steps


@pytest.mark.parametrize("start", [0, 150_000])
def test_training_spec_agrees_with_the_library_until_the_first_tie(start):
    """The library's trainer breaks ties differently (our rule: the greatest pair as (bytes, bytes)), so the merges
    agree exactly up to the first step with a tie, and there both choose a pair of the top count."""
    import pydoc_data.topics
    text = "".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))[start:start + 30_000]
    ours = spec.train_bpe_spec(text, 256 + 120)[1]
    theirs = library_merges(text, 256 + 120)
    steps = counts_at_each_merge(text, 256 + 120)
    first_tie = next(k for k, (_, _, n_top, _) in enumerate(steps) if n_top > 1)
    assert first_tie >= 5
    assert ours[:first_tie] == theirs[:first_tie]
    assert [m for m, *_ in steps] == ours
    _, top, _, pairs = steps[first_tie]
    assert pairs[ours[first_tie]] == top and pairs.get(theirs[first_tie]) == top


def test_training_spec_on_hand_computed_examples():
    vocab, merges = spec.train_bpe_spec("low low low lower lowest newer newer wider", 256 + 3)
    # pre-tokens: low, ' low' x2, ' lower', ' lowest', ' newer' x2, ' wider'. (o, w) and (l, o) both 5: (o, w) wins;
    # then (l, ow) 5; then (' ', low) and (e, r) both 4: b'e' > b' ', so (e, r)
    assert merges == [(b"o", b"w"), (b"l", b"ow"), (b"e", b"r")]
    assert vocab[256] == b"ow" and vocab[257] == b"low" and vocab[258] == b"er" and len(vocab) == 259
    # 'aaa' with (a, a): left to right without overlap -> (aa, a); ' aaaa' -> (' ', aa, aa); then three pairs seen
    # once tie: (aa, aa) > (aa, a) > (' ', aa)
    _, merges = spec.train_bpe_spec("aaa aaaa", 256 + 3)
    assert merges == [(b"a", b"a"), (b"aa", b"aa"), (b"aa", b"a")]
    assert spec.merge_pair((b"a", b"a", b"a"), (b"a", b"a")) == (b"aa", b"a")
    # special tokens: split out, never merged, ids after the merges in the order given
    vocab, merges = spec.train_bpe_spec("ab<|x|>ab<|y|>", 256 + 1 + 2, ("<|y|>", "<|x|>"))
    assert merges == [(b"a", b"b")] and vocab[257] == b"<|y|>" and vocab[258] == b"<|x|>"
    # vocab_size 256 or less: no merge; the special tokens are still added
    assert spec.train_bpe_spec("abab", 256)[1] == [] and len(spec.train_bpe_spec("abab", 256, ("<s>",))[0]) == 257
    # Chinese: '中' is e4 b8 ad; two merges make it one token
    _, merges = spec.train_bpe_spec("中中 中", 256 + 2)
    assert merges == [(b"\xe4", b"\xb8"), (b"\xe4\xb8", b"\xad")]


def test_encoding_spec_on_hand_computed_examples():
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"b", b"c"), (b"a", b"b"), (b" ", b"a"), (b"a", b"bc")]
    for pair in merges:
        vocab[len(vocab)] = pair[0] + pair[1]
    tok = spec.BPETokenizerSpec(vocab, merges)
    assert tok.encode("abc") == [259]                      # bc first (rank 0), then a + bc (rank 3)
    assert tok.encode("ab") == [257]
    assert tok.encode(" abc") == [258, 256]                # bc (rank 0), then ' ' + a (rank 2): ' a' + 'bc'
    assert tok.decode(tok.encode("ab bc abc")) == "ab bc abc"


# =========================================================================== correct solutions in other styles

def train_naive_tuples(text, vocab_size, special_tokens=()):
    """The textbook loop, recounting everything, words as tuples, merges found by scanning indices."""
    pieces = re.split("|".join(map(re.escape, sorted(special_tokens, key=len, reverse=True))), text) \
        if special_tokens else [text]
    pat = regex.compile(spec.GPT2_SPLIT)
    words = Counter()
    for piece in pieces:
        for w in pat.findall(piece):
            words[tuple(w.encode("utf-8")[i:i + 1] for i in range(len(w.encode("utf-8"))))] += 1
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while len(vocab) < vocab_size - len(special_tokens):
        counts = defaultdict(int)
        for w, n in words.items():
            for i in range(len(w) - 1):
                counts[(w[i], w[i + 1])] += n
        if not counts:
            break
        best_count = max(counts.values())
        best = sorted(p for p, c in counts.items() if c == best_count)[-1]
        merges.append(best)
        vocab[len(vocab)] = b"".join(best)
        new_words = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(b"".join(best))
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    vocab.update({len(vocab) + k: s.encode("utf-8") for k, s in enumerate(special_tokens)})
    return vocab, merges


class _Desc:
    """Reverses the order of a pair for heapq (a min-heap): the greatest pair comes out first."""

    def __init__(self, pair):
        self.pair = pair

    def __lt__(self, other):
        return self.pair > other.pair

    def __eq__(self, other):
        return self.pair == other.pair


def train_with_heap(text, vocab_size, special_tokens=()):
    """Incremental counts with a heap of (-count, pair) and lazy deletion of stale entries."""
    words = Counter(spec.as_bytes(w) for w in spec.pre_tokens(text, special_tokens))
    symbols = {i: list(w) for i, w in enumerate(words)}
    freq = dict(enumerate(words.values()))
    counts, where = Counter(), defaultdict(set)
    for i, w in symbols.items():
        for p in zip(w, w[1:]):
            counts[p] += freq[i]
            where[p].add(i)
    heap = [(-c, _Desc(p)) for p, c in counts.items()]
    heapq.heapify(heap)
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while heap and len(vocab) + len(special_tokens) < vocab_size:
        neg, key = heapq.heappop(heap)
        pair = key.pair
        if counts.get(pair, 0) != -neg or -neg == 0:
            continue                                        # stale
        merges.append(pair)
        new = pair[0] + pair[1]
        vocab[len(vocab)] = new
        touched = set()
        for i in where.pop(pair, set()):
            w = symbols[i]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == pair:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            if len(out) == len(w):
                continue
            for p in zip(w, w[1:]):
                counts[p] -= freq[i]
                touched.add(p)
            for p in zip(out, out[1:]):
                counts[p] += freq[i]
                where[p].add(i)
                touched.add(p)
            symbols[i] = out
        for p in touched:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], _Desc(p)))
            else:
                counts.pop(p, None)
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


class TokenizerGPT2Style:
    """openai/gpt-2's encoder.py loop: get_pairs, the lowest-ranked bigram, word.index to merge every occurrence."""

    def __init__(self, vocab, merges, special_tokens=None):
        self.decoder = dict(vocab)
        self.encoder = {v: k for k, v in vocab.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.specials = sorted(special_tokens or [], key=len, reverse=True)
        self.pat = regex.compile(spec.GPT2_SPLIT)

    def bpe(self, token: bytes):
        word = tuple(token[i:i + 1] for i in range(len(token)))
        pairs = set(zip(word, word[1:]))
        while pairs:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            pairs = set(zip(word, word[1:]))
        return [self.encoder[w] for w in word]

    def encode(self, text):
        out, rest = [], text
        while rest:
            hits = [(rest.find(s), -len(s), s) for s in self.specials if s in rest]
            if not hits:
                chunk, special, rest = rest, None, ""
            else:
                at, _, special = min(hits)
                chunk, rest = rest[:at], rest[at + len(special):]
            for token in self.pat.findall(chunk):
                out += self.bpe(token.encode("utf-8"))
            if special is not None:
                out.append(self.encoder[special.encode("utf-8")])
        return out

    def decode(self, ids):
        return bytearray().join(self.decoder[i] for i in ids).decode("utf-8", "replace")


class TokenizerMergeOrder:
    """Every merge, in training order, applied to the whole pre-token (the specification's own formulation is the
    other way round: here the special tokens are found with str.partition in a loop)."""

    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab, self.merges = vocab, merges
        self.ids = {v: k for k, v in vocab.items()}
        self.specials = special_tokens or []

    def encode(self, text):
        if not text:
            return []
        for s in sorted(self.specials, key=len, reverse=True):
            if s in text:
                before, _, after = text.partition(s)
                return self.encode(before) + [self.ids[s.encode("utf-8")]] + self.encode(after)
        out = []
        for w in spec.pre_tokens(text):
            parts = spec.as_bytes(w)
            for pair in self.merges:
                parts = spec.merge_pair(parts, pair)
            out += [self.ids[p] for p in parts]
        return out

    def decode(self, ids):
        return bytes(b for i in ids for b in self.vocab[i]).decode("utf-8", errors="replace")


@pytest.mark.parametrize("impl", [train_naive_tuples, train_with_heap], ids=lambda f: f.__name__)
def test_other_correct_trainers_pass(impl):
    report = run("train_bpe", impl)
    assert report.passed, str(report)


@pytest.mark.parametrize("impl", [TokenizerGPT2Style, TokenizerMergeOrder], ids=lambda c: c.__name__)
def test_other_correct_tokenizers_pass(impl):
    report = run("BPETokenizer", impl)
    assert report.passed, str(report)


def test_a_trainer_that_uses_the_python_re_module_with_letters_as_word_characters_is_rejected():
    """`re` has no \\p{L}: `[^\\W\\d_]` is close but counts '²' and '½' (numbers, not letters) as letters."""
    approx = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")

    def trainer(text, vocab_size, special_tokens=()):
        pieces = spec.split_on_specials(text, special_tokens)
        words = Counter(spec.as_bytes(w) for p in pieces for w in approx.findall(p))
        return spec._candidate(text, vocab_size, special_tokens, words=words)

    report = run("train_bpe", trainer)
    assert not report.passed and "numbers" in report.failure.note, str(report)
    assert report.failure.mistake is None


# =========================================================================== wrong solutions as candidates write them

def _one_merge_too_many(text, vocab_size, special_tokens=()):
    return spec._candidate(text, vocab_size + 1, special_tokens)          # while len(vocab) <= vocab_size


def _merges_as_joined_bytes(text, vocab_size, special_tokens=()):
    vocab, merges = spec.train_bpe_spec(text, vocab_size, special_tokens)
    return vocab, [a + b for a, b in merges]


def _vocab_as_str(text, vocab_size, special_tokens=()):
    vocab, merges = spec.train_bpe_spec(text, vocab_size, special_tokens)
    return {i: b.decode("utf-8", errors="replace") for i, b in vocab.items()}, merges


def _strips_pre_tokens(text, vocab_size, special_tokens=()):
    words = Counter(spec.as_bytes(w.strip()) for w in spec.pre_tokens(text, special_tokens) if w.strip())
    return spec._candidate(text, vocab_size, special_tokens, words=words)


def _merges_sorted_by_count(text, vocab_size, special_tokens=()):
    vocab, merges = spec.train_bpe_spec(text, vocab_size, special_tokens)
    ordered = sorted(merges)                                                # "tidied" at the end
    return {**vocab, **{256 + k: a + b for k, (a, b) in enumerate(ordered)}}, ordered


def _no_lookahead_whitespace(text, vocab_size, special_tokens=()):
    pat = regex.compile(r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+""")
    pieces = spec.split_on_specials(text, special_tokens)
    words = Counter(spec.as_bytes(w) for p in pieces for w in pat.findall(p))
    return spec._candidate(text, vocab_size, special_tokens, words=words)


class _UnescapedSpecials(spec._Tokenizer):
    def pieces(self, text):                             # '|' inside '<|endoftext|>' becomes a regex alternation
        if not self.special_tokens:
            return [text]
        return [p for p in regex.split("(" + "|".join(self.special_tokens) + ")", text) if p is not None]


class _DecodeIgnores(spec._Tokenizer):
    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="ignore")


class _IdsAsBytes(spec._Tokenizer):
    def decode(self, ids):
        return bytes(i % 256 for i in ids).decode("utf-8", errors="replace")


class _NestedIds(spec._Tokenizer):
    def encode(self, text):                                 # one list of ids per special-token piece
        return [super(_NestedIds, self).encode(piece) for piece in self.pieces(text) if piece]

    def decode(self, ids):
        return super().decode([i for piece in ids for i in piece])


class _NormalisesText(spec._Tokenizer):
    def encode(self, text):
        return super().encode(unicodedata.normalize("NFC", text))


class _StripsDecoded(spec._Tokenizer):
    def decode(self, ids):
        return super().decode(ids).strip()


UNREGISTERED = [
    (TRAIN, _one_merge_too_many, "wrong-keys"), (TRAIN, _merges_as_joined_bytes, "wrong-type"),
    (TRAIN, _vocab_as_str, "wrong-type"), (TRAIN, _strips_pre_tokens, "wrong-value"),
    (TRAIN, _merges_sorted_by_count, "wrong-value"), (TRAIN, _no_lookahead_whitespace, "wrong-value"),
    (TOKENIZER, _DecodeIgnores, None), (TOKENIZER, _IdsAsBytes, None),
    (TOKENIZER, _NestedIds, "wrong-length"), (TOKENIZER, _NormalisesText, None), (TOKENIZER, _StripsDecoded, None),
]


@pytest.mark.parametrize("ex,impl,kind", UNREGISTERED, ids=[f.__name__.strip("_") for _, f, _ in UNREGISTERED])
def test_wrong_solutions_are_rejected_without_a_false_diagnosis(ex, impl, kind):
    report = evaluate(ex, impl)
    assert not report.passed, f"{impl.__name__} passes"
    assert kind is None or report.kind == kind, str(report)
    assert report.failure.mistake is None, str(report)
    with speaking("zh"):
        assert str(report)                                  # the report renders in Chinese too


def test_unescaped_special_tokens_are_named_as_special_tokens_encoded_as_text():
    """'<|endoftext|>' joined into a regex without escaping is '<' or 'endoftext' or '>': the text is cut at those
    pieces and the special token never matches, which is what the registered diagnosis says."""
    report = evaluate(TOKENIZER, _UnescapedSpecials)
    assert not report.passed and report.failure.mistake == "special tokens encoded as text", str(report)


def test_a_wrong_merge_is_shown_as_the_first_differing_id_and_merge():
    report = evaluate(TRAIN, spec._ties_to_smallest)
    problem = report.failure.problem
    assert problem.where.startswith("vocab[") and "expected" in problem.message, str(report)
    report = evaluate(TRAIN, _merges_sorted_by_count)
    assert report.failure.problem.where.startswith("vocab[25"), str(report)


def test_a_wrong_id_is_shown_at_its_position_in_the_call():
    report = evaluate(TOKENIZER, spec._LeftmostMergeFirst)
    text = str(report)
    assert "encode" in report.failure.call and "encode(...)[" in report.failure.problem.where, text
    assert "expected" in report.failure.problem.message


# =========================================================================== bad input: a clear report, never a crash

def _raises(text, vocab_size, special_tokens=()):
    raise KeyError("pair")


def _returns_none(text, vocab_size, special_tokens=()):
    vocab, merges = spec.train_bpe_spec(text, vocab_size, special_tokens)


def _endless(text, vocab_size, special_tokens=()):
    merges = []
    while len(merges) < vocab_size:                          # forgot to append when no pair is left
        if not text:
            continue
        merges.append(None)
    return spec.train_bpe_spec(text, vocab_size, special_tokens)


def _edits_special_tokens(text, vocab_size, special_tokens=()):
    result = spec.train_bpe_spec(text, vocab_size, tuple(special_tokens))
    if isinstance(special_tokens, list):
        special_tokens.sort(key=len, reverse=True)          # longest first, for later... in the caller's list
    return result


def _library_trainer(text, vocab_size, special_tokens=()):
    from tokenizers.implementations import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([text], vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False)
    return spec.train_bpe_spec(text, vocab_size, special_tokens)


class _ConstructorRaises:
    def __init__(self, vocab, merges, special_tokens=None):
        self.ranks = {pair: r for pair, r in merges.items()}     # merges is a list, not a dict


class _EditsVocab(spec._Tokenizer):
    def __init__(self, vocab, merges, special_tokens=None):
        for s in special_tokens or []:
            vocab[max(vocab) + 1] = s.encode("utf-8")        # "makes sure" the specials are there
        super().__init__(vocab, merges, special_tokens)


class _LoopsForever(spec._Tokenizer):
    def merge(self, parts):
        while len(parts) > 1:                                # never merges: no progress, no break
            pass
        return parts


BAD = [
    ("train_bpe", _raises, "exception", "KeyError"),
    ("train_bpe", _returns_none, "returned-none", "return"),
    ("train_bpe", _endless, "timeout", "endless loop"),
    ("train_bpe", _library_trainer, "forbidden-call", "train_from_iterator"),
    ("BPETokenizer", _ConstructorRaises, "exception", "constructor"),
    ("BPETokenizer", _EditsVocab, "mutated-input", "vocab"),
    ("BPETokenizer", _LoopsForever, "timeout", "endless loop"),
]


@pytest.mark.parametrize("name,impl,kind,words", BAD, ids=[f.__name__.strip("_") for _, f, _, _ in BAD])
def test_bad_input_gets_a_clear_report(name, impl, kind, words):
    report = evaluate(dataclasses.replace(get(name), timeout=0.5), impl)
    assert not report.passed and report.kind == kind, str(report)
    assert words in str(report), str(report)
    with speaking("zh"):
        assert str(report)


def test_a_tuple_argument_edited_in_place_is_impossible_and_a_list_one_is_named():
    ex = dataclasses.replace(TRAIN, cases=lambda: [case(call, "ab ab", 259, ["<b>", "<aa>"], note="x")])
    report = evaluate(ex, _edits_special_tokens)
    assert report.kind == "mutated-input" and "`special_tokens`" in report.failure.problem.message, str(report)


def test_an_instance_instead_of_the_class_is_named():
    vocab, merges = spec._trained()
    report = run("BPETokenizer", spec.BPETokenizerSpec(vocab, merges))
    assert not report.passed and "your class itself" in str(report)


def test_stubs_and_instances_never_crash_the_check(book):
    for name in ("train_bpe", "BPETokenizer"):
        assert run(name, book(CHAPTER, stubs=True)[name]).status == "not attempted"
        assert not run(name, 42).passed


# =========================================================================== the cases, speed, the bench

def test_cases_cover_the_issue():
    notes = " | ".join(c.note for c in TRAIN.all_cases())
    for needed in ("tie", "special tokens next to each other and to text", "one special token inside another",
                   "spaces and newlines", "digits", "Chinese", "emoji", "empty text", "vocab_size = 256",
                   "larger than the merges", "random Unicode"):
        assert needed in notes, needed
    notes = " | ".join(c.note for c in TOKENIZER.all_cases())
    for needed in ("next to each other and to text", "the longest first", "end inside a character", "empty",
                   "by rank", "spaces and newlines", "digits", "emoji", "random Unicode, round trip",
                   "special_tokens=None"):
        assert needed in notes, needed
    assert len(TRAIN.mistakes) >= 5 and len(TOKENIZER.mistakes) >= 5


def test_cut_character_cases_expect_the_replacement_character():
    outcome = TOKENIZER.expected(next(i for i, c in enumerate(TOKENIZER.all_cases()) if "end inside" in c.note))
    assert outcome.parts[-2][1] == "机\ufffd"


@pytest.mark.parametrize("name", ["train_bpe", "BPETokenizer"])
def test_a_check_costs_under_a_cpu_second_from_a_fresh_declaration(name, book):
    fresh = dataclasses.replace(get(name))                  # no cached cases or expected outcomes
    start = time.process_time()
    report = evaluate(fresh, book(CHAPTER)[name])
    assert report.passed and time.process_time() - start < 1.0


def test_a_mistake_that_fails_late_is_still_diagnosed_within_a_cpu_second():
    """Naming a mistake runs every registered mistake on every case: the costliest diagnosis is the one whose
    mistake fails on a late case."""
    for ex, name in ((TRAIN, "special tokens merged as text"), (TOKENIZER, "merges across pre-tokens")):
        latest = next(m for m in ex.mistakes if m.name == name)
        start = time.process_time()
        report = evaluate(ex, latest.impl)
        assert report.failure.mistake == latest.name
        assert time.process_time() - start < 1.0, latest.name


def test_book_train_bpe_trains_a_megabyte_within_ten_cpu_seconds(book):
    (text, vocab_size), _ = spec._bench_inputs()                # the input of `python -m utils.bench train_bpe`
    assert 0.95e6 <= len(text.encode("utf-8")) <= 1.1e6 and vocab_size == 1000
    start = time.process_time()
    vocab, merges = book(CHAPTER)["train_bpe"](text, vocab_size)
    seconds = time.process_time() - start
    assert len(vocab) == 1000 and len(merges) == 744
    assert seconds < 10.0, f"{seconds:.1f} CPU seconds"


def test_bench_command_times_train_bpe_against_the_tokenizers_trainer(capsys, monkeypatch):
    """`python -m utils.bench train_bpe` times the book's train_bpe against the library's trainer; here on a small
    text (the declared input, about 1 MB, is checked above)."""
    from utils.bench import main
    monkeypatch.setattr(TRAIN, "bench", (lambda: ((spec.TRAINING_TEXT * 5, 400), {}), spec.train_with_tokenizers))
    assert main(["train_bpe", "--repeats", "1", "--warmup", "0"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("train_bpe"))
    book_ms, library_ms = (float(v.removesuffix("ms")) for v in row.split()[-3:-1])
    assert book_ms > 0 and library_ms > 0
