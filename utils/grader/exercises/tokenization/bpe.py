"""Part 8, tokenization: a byte-level BPE tokenizer (chapter tokenization/bpe).

    train_bpe(text, vocab_size, special_tokens=()) -> (vocab, merges)      a PlainExercise
    BPETokenizer(vocab, merges, special_tokens=None): encode, decode         a PlainClassExercise

Both oracles are plain specifications: training recounts every adjacent pair of every pre-token at every
merge (the naive loop, never the chapter's incremental solution); encoding applies the merges one after the
other, in training order, to each pre-token. Pre-tokenization is GPT-2's pattern, with the `regex` package
(imported on first use). The results are plain values compared exactly: the report names the first id of the
vocabulary, the first merge or the first token id that differs.
"""

from __future__ import annotations

import importlib.util
import random
from collections import Counter
from functools import cache

from ....i18n import msg
from ...core import Mistake, Property
from ...inputs import call, case
from ...kinds import PlainClassExercise, PlainExercise, Session, method
from ...registry import register
from ...sandbox import time_limit

# GPT-2's pre-tokenization pattern (openai/gpt-2, src/encoder.py), the contractions written as CS336 writes them.
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@cache
def gpt2_pattern():
    import regex
    return regex.compile(GPT2_SPLIT)


def split_on_specials(text: str, special_tokens, keep: bool = False) -> list[str]:
    """`text` cut at every special token, longest first; with `keep` the special tokens stay as pieces."""
    import regex
    if not special_tokens:
        return [text]
    alternation = "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
    return regex.split(f"({alternation})" if keep else alternation, text)


def pre_tokens(text: str, special_tokens=()) -> list[str]:
    """Every pre-token of `text`: split on the special tokens (dropped), then GPT-2's pattern on each piece."""
    pattern = gpt2_pattern()
    return [w for piece in split_on_specials(text, special_tokens) for w in pattern.findall(piece)]


def as_bytes(word: str) -> tuple:
    """A pre-token as a tuple of single bytes: 'é' -> (b'\\xc3', b'\\xa9')."""
    return tuple(bytes([b]) for b in word.encode("utf-8"))


def merge_pair(word: tuple, pair: tuple) -> tuple:
    """Every occurrence of `pair` in `word` replaced by its concatenation, left to right, without overlap."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


# --------------------------------------------------------------------------- train_bpe: the specification

def train_bpe_spec(text, vocab_size, special_tokens=()):
    """Recount every adjacent pair inside every pre-token, merge the most frequent (ties: the greatest pair,
    compared as (bytes, bytes)), until the vocabulary holds vocab_size entries or no pair is left."""
    words = Counter(as_bytes(w) for w in pre_tokens(text, special_tokens))
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while len(vocab) + len(special_tokens) < vocab_size:
        pairs = Counter()
        for word, n in words.items():
            for i in range(len(word) - 1):
                pairs[word[i], word[i + 1]] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        merged = Counter()
        for word, n in words.items():
            merged[merge_pair(word, best)] += n
        words = merged
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


# --------------------------------------------------------------------------- train_bpe: mistakes as written

def _candidate(text, vocab_size, special_tokens=(), *, words=None, choose=None, specials_first=False,
               budget=None, min_count=1):
    """One candidate's train_bpe, from counted pre-tokens; each mistake below changes one step of it."""
    if words is None:
        words = Counter(as_bytes(w) for w in pre_tokens(text, special_tokens))
    vocab = {i: bytes([i]) for i in range(256)}
    if specials_first:
        for s in special_tokens:
            vocab[len(vocab)] = s.encode("utf-8")
    n_merges = vocab_size - 256 - len(special_tokens) if budget is None else budget(vocab_size, special_tokens)
    merges = []
    while len(merges) < n_merges:
        pairs = {}
        for word, n in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + n
        if not pairs:
            break
        best = choose(pairs) if choose else max(pairs, key=lambda p: (pairs[p], p))
        if pairs[best] < min_count:
            break
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        words = _recount(words, best)
    if not specials_first:
        for s in special_tokens:
            vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


def _recount(words, pair):
    out = Counter()
    for w, n in words.items():
        out[merge_pair(w, pair)] += n
    return out


def _ties_to_first_counted(text, vocab_size, special_tokens=()):
    return _candidate(text, vocab_size, special_tokens, choose=lambda pairs: max(pairs, key=pairs.get))


def _ties_to_smallest(text, vocab_size, special_tokens=()):
    ranked = lambda pairs: sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    return _candidate(text, vocab_size, special_tokens, choose=ranked)


def _no_pre_tokens(text, vocab_size, special_tokens=()):
    pieces = split_on_specials(text, special_tokens)
    return _candidate(text, vocab_size, special_tokens, words=Counter(as_bytes(p) for p in pieces if p))


def _whitespace_split(text, vocab_size, special_tokens=()):
    pieces = split_on_specials(text, special_tokens)
    return _candidate(text, vocab_size, special_tokens, words=Counter(as_bytes(w) for p in pieces for w in p.split()))


def _specials_in_text(text, vocab_size, special_tokens=()):
    return _candidate(text, vocab_size, special_tokens, words=Counter(as_bytes(w) for w in pre_tokens(text)))


def _specials_first(text, vocab_size, special_tokens=()):
    return _candidate(text, vocab_size, special_tokens, specials_first=True)


def _distinct_pre_tokens(text, vocab_size, special_tokens=()):
    words = Counter(set(as_bytes(w) for w in pre_tokens(text, special_tokens)))
    return _candidate(text, vocab_size, special_tokens, words=words)


def _characters(text, vocab_size, special_tokens=()):
    words = Counter(tuple(c.encode("utf-8") for c in w) for w in pre_tokens(text, special_tokens))
    return _candidate(text, vocab_size, special_tokens, words=words)


def _specials_outside_budget(text, vocab_size, special_tokens=()):
    return _candidate(text, vocab_size, special_tokens, budget=lambda size, specials: size - 256)


def _stops_at_single_pairs(text, vocab_size, special_tokens=()):
    return _candidate(text, vocab_size, special_tokens, min_count=2)


# --------------------------------------------------------------------------- train_bpe: cases

CORPUS = ("低碳生活，从我做起。机器学习是人工智能的一个分支，机器学习让机器从数据中学习。"
          "the cat sat on the mat; the cat ate the rat. 大语言模型 large language models 大语言模型!! "
          "aaaa aaa aa a 1234 12 3.14")
CODE = "def f(x):\n    return x  \n\n\n    \n\tpass\n        # done\n\n  \n"
DIGITS = "2024年3月15日 12345 3.14159 1,000,000 007 2048 4096 8192 1024"
EMOJI = "😀 😀😀 emoji 😀 👍🏽👍🏽 🇨🇳 ok 😀!"
CONTRACTIONS = "don't we'll they're it's I'M HE'S she'd you've"
NUMBERS = "x² + y² = z², a² + b² = c², ½ + ¼ = ¾, H₂O, 2³ = 8, ①②③, Ⅻ, x²y² x³"


def random_text(n: int, seed: int) -> str:
    """n characters drawn from ASCII letters and spaces, Latin-1, CJK, punctuation and emoji (no surrogates)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0x61, 0x7A), (0x61, 0x7A), (0x20, 0x20), (0xA0, 0xFF), (0x4E00, 0x4E40),
              (0x3000, 0x3003), (0xFF01, 0xFF0F), (0x1F600, 0x1F606), (0x0A, 0x0A)]
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(n))


def _train_cases():
    return [
        case(call, "low low low lower lowest newer newer wider", 256 + 10, note="the classic toy corpus"),
        case(call, "xy yx", 256 + 1, note="a three-way tie at the first merge: the greatest pair wins"),
        case(call, "ab ba ab ba cd dc", 256 + 6, note="ties at every merge"),
        case(call, CORPUS, 256 + 30, note="Chinese and English"),
        case(call, CORPUS, 256 + 25 + 1, ("<|endoftext|>",), note="one special token, not in the text"),
        case(call, "你好<|endoftext|><|im_end|>世界<|endoftext|>hello<|im_end|>你好", 256 + 8 + 2,
             ("<|endoftext|>", "<|im_end|>"), note="special tokens next to each other and to text"),
        case(call, "a<|endoftext|><|endoftext|>b <|endoftext|>", 256 + 4 + 2,
             ("<|endoftext|>", "<|endoftext|><|endoftext|>"), note="one special token inside another"),
        case(call, CODE, 256 + 12, note="runs of spaces and newlines (code)"),
        case(call, DIGITS, 256 + 15, note="digits"),
        case(call, EMOJI, 256 + 12, note="emoji: 4-byte UTF-8 characters"),
        case(call, CONTRACTIONS, 256 + 10, note="contractions (GPT-2's pattern is case-sensitive)"),
        case(call, NUMBERS, 256 + 12, note="superscripts, fractions, circled numbers: Unicode numbers, not letters"),
        case(call, "aaaaaaa aaaa aaaaa", 256 + 4, note="runs of one byte: merges without overlap"),
        case(call, "", 300, note="empty text"),
        case(call, "", 256 + 2, ("<|endoftext|>", "<|im_end|>"), note="empty text, two special tokens"),
        case(call, CORPUS, 256, note="vocab_size = 256: no merge"),
        case(call, "ab ab ab", 256 + 50, note="vocab_size larger than the merges available"),
        case(call, random_text(300, 1), 256 + 40, note="random Unicode text, 300 characters"),
    ]


def _extends(call):
    """A larger vocabulary keeps the merges of a smaller one, in order."""
    text = CORPUS + " " + CODE + " " + random_text(200, 7)
    _, small = call(text, 256 + 20)
    _, large = call(text, 256 + 45)
    if list(large[:len(small)]) != list(small):
        k = next((i for i, (a, b) in enumerate(zip(small, large)) if a != b), min(len(small), len(large)))
        return msg("with vocab_size 276 and 301 the merges differ at merge {k}: training must be deterministic "
                   "and greedy, one merge after another", k=k)
    return None


def _repeated(call):
    """The same text three times over: every count triples, the merges stay."""
    text = "the cat sat on the mat; 机器学习让机器从数据中学习。 aaaa aaa 2024"
    _, once = call(text, 256 + 25)
    _, thrice = call(text + text + text, 256 + 25)
    if list(once) != list(thrice):
        return msg("the text repeated three times gives other merges ({once} then {thrice}): only the ranking of "
                   "the counts may matter, not the text's length", once=len(once), thrice=len(thrice))
    return None


def _bench_text(n_bytes: int = 1_000_000) -> str:
    """About n_bytes of text shipped with Python: pydoc_data.topics (the language reference behind help()),
    then the source of standard-library modules, in a fixed order, until n_bytes."""
    import importlib
    import inspect
    import pydoc_data.topics
    parts = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    for name in ("pydoc", "argparse", "typing", "inspect", "dataclasses", "functools", "textwrap", "difflib",
                 "pathlib", "statistics", "fractions", "decimal", "collections", "enum", "json.decoder",
                 "email.message", "http.client", "logging", "subprocess", "tarfile", "zipfile", "datetime"):
        if sum(len(p) for p in parts) >= n_bytes:
            break
        try:
            parts.append(inspect.getsource(importlib.import_module(name)))
        except (ImportError, OSError, TypeError):
            continue
    return "".join(parts)[:n_bytes]


def _bench_inputs():
    return (_bench_text(), 1000), {}


def train_with_tokenizers(text, vocab_size, special_tokens=()):
    """The `tokenizers` library's byte-level BPE trainer on the same text (its own tie rule: for the bench)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    return tok


_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
_TRAINERS = ("tokenizers.implementations.ByteLevelBPETokenizer.train",
             "tokenizers.implementations.ByteLevelBPETokenizer.train_from_iterator") if _TOKENIZERS else ()

TRAIN_BPE = PlainExercise(
    name="train_bpe",
    chapter="tokenization/bpe",
    signature="train_bpe(text, vocab_size, special_tokens=())",
    oracle=train_bpe_spec,
    cases=_train_cases,
    returns=("vocab", "merges"),
    forbidden=_TRAINERS,
    timeout=5.0,
    bench=(_bench_inputs, train_with_tokenizers),
    properties=[
        Property("a larger vocabulary extends the merges of a smaller one", _extends),
        Property("repeating the text leaves the merges unchanged", _repeated),
    ],
    hints=(
        "split on the special tokens, pre-tokenize each piece with GPT-2's pattern, and count the pre-tokens; "
        "pairs are counted inside one pre-token only   (eqs. bpe-count, bpe-argmax)",
        "each step: count every adjacent pair of every pre-token, weighted by how often the pre-token occurs; take "
        "the most frequent pair, ties to the greatest (max over (count, pair)); replace it left to right without "
        "overlap; stop at vocab_size entries (the special tokens count) or when no pair is left   (eq. bpe-merge)",
        "best = max(pairs, key=lambda p: (pairs[p], p)); merges.append(best); vocab[256 + len(merges) - 1] = "
        "best[0] + best[1]; the special tokens' bytes come last: vocab[len(vocab)] = s.encode('utf-8')",
    ),
    mistakes=[
        Mistake("ties to the first pair counted", _ties_to_first_counted,
                "among equally frequent pairs you take the first one counted (max(pairs, key=pairs.get)); the "
                "contract breaks ties to the lexicographically greatest pair: max(pairs, key=lambda p: (pairs[p], p))"),
        Mistake("ties to the smallest pair", _ties_to_smallest,
                "ties go to the smallest pair in your code (sorted by (-count, pair)); the contract takes the "
                "greatest: max over (count, pair)"),
        Mistake("merges across pre-tokens", _no_pre_tokens,
                "your merges cross pre-token boundaries (b'e' + b' ' from 'the cat'): pre-tokenize each piece "
                "with GPT-2's pattern and count pairs inside one pre-token only"),
        Mistake("splits on whitespace", _whitespace_split,
                "you split the text with str.split(), which throws the spaces away: GPT-2's pattern keeps the "
                "space in front of a word (' cat') and keeps runs of spaces and newlines as pre-tokens"),
        Mistake("special tokens merged as text", _specials_in_text,
                "the special tokens took part in the merges: cut the text at every special token first and count "
                "only the pieces between them"),
        Mistake("special tokens before the merges", _specials_first,
                "special tokens come after the merges: ids 0-255 are the bytes, then one id per merge, then the "
                "special tokens in the order given"),
        Mistake("counts distinct pre-tokens once", _distinct_pre_tokens,
                "you count each distinct pre-token once: weight its pairs by how many times the pre-token occurs "
                "in the text"),
        Mistake("characters, not bytes", _characters,
                "you start from characters: a byte-level BPE starts from the UTF-8 bytes, so '中' is three "
                "symbols (b'\\xe4', b'\\xb8', b'\\xad') until merges join them"),
        Mistake("special tokens outside vocab_size", _specials_outside_budget,
                "your vocabulary is too large: vocab_size counts the 256 bytes, the merges and the special tokens, "
                "so make vocab_size - 256 - len(special_tokens) merges at most"),
        Mistake("stops at pairs seen once", _stops_at_single_pairs,
                "you stop when the best pair occurs only once: keep merging until vocab_size or until no pair is "
                "left, whatever its count"),
    ],
)


# --------------------------------------------------------------------------- BPETokenizer: the specification

class BPETokenizerSpec:
    """encode: special tokens (longest first) to their ids; every other pre-token is its bytes with each merge
    applied in training order; decode: the bytes joined, then decoded with errors="replace"."""

    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.ids = {b: i for i, b in self.vocab.items()}
        self.special_tokens = list(special_tokens or [])

    def encode(self, text):
        ids = []
        for piece in split_on_specials(text, self.special_tokens, keep=True):
            if piece in self.special_tokens:
                ids.append(self.ids[piece.encode("utf-8")])
                continue
            for word in gpt2_pattern().findall(piece):
                symbols = as_bytes(word)
                for pair in self.merges:
                    symbols = merge_pair(symbols, pair)
                ids += [self.ids[s] for s in symbols]
        return ids

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- BPETokenizer: mistakes as written

class _Tokenizer:
    """One candidate's tokenizer, merging by rank; each mistake below overrides one method."""

    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab = vocab
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.ids = {b: i for i, b in vocab.items()}
        self.special_tokens = sorted(special_tokens or [], key=len, reverse=True)

    def pieces(self, text):
        return split_on_specials(text, self.special_tokens, keep=True)

    def words(self, piece):
        return gpt2_pattern().findall(piece)

    def merge(self, parts):
        while len(parts) > 1:
            pairs = [(self.ranks.get(p, len(self.ranks)), i) for i, p in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == len(self.ranks):
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
        return parts

    def encode(self, text):
        ids = []
        for piece in self.pieces(text):
            if piece in self.special_tokens:
                ids.append(self.ids[piece.encode("utf-8")])
                continue
            for word in self.words(piece):
                ids += [self.ids[p] for p in self.merge([bytes([b]) for b in word.encode("utf-8")])]
        return ids

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


class _SpecialsAsText(_Tokenizer):
    def pieces(self, text):
        return [text]


class _ShortestSpecialFirst(_Tokenizer):
    def pieces(self, text):
        import regex
        if not self.special_tokens:
            return [text]
        alternation = "|".join(regex.escape(s) for s in sorted(self.special_tokens, key=len))
        return regex.split(f"({alternation})", text)


class _SpecialsDropped(_Tokenizer):
    def pieces(self, text):
        return split_on_specials(text, self.special_tokens)          # no capturing group: the specials vanish


class _DecodesTokenByToken(_Tokenizer):
    def decode(self, ids):
        return "".join(self.vocab[i].decode("utf-8", errors="replace") for i in ids)


class _StrictDecode(_Tokenizer):
    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8")


class _LeftmostMergeFirst(_Tokenizer):
    def merge(self, parts):
        merged = True
        while merged:
            merged = False
            for i, pair in enumerate(zip(parts, parts[1:])):
                if pair in self.ranks:
                    parts = parts[:i] + [pair[0] + pair[1]] + parts[i + 2:]
                    merged = True
                    break
        return parts


class _NoPreTokens(_Tokenizer):
    def words(self, piece):
        return [piece] if piece else []


class _LongestMatch(_Tokenizer):
    """Greedy longest match against the vocabulary, as WordPiece encodes (not BPE)."""

    def merge(self, parts):
        word, out, i = b"".join(parts), [], 0
        while i < len(word):
            j = len(word)
            while j > i + 1 and word[i:j] not in self.ids:
                j -= 1
            out.append(word[i:j])
            i = j
        return out


class _FirstOccurrenceOnly(_Tokenizer):
    def merge(self, parts):
        for pair in sorted(self.ranks, key=self.ranks.get):
            for i in range(len(parts) - 1):
                if (parts[i], parts[i + 1]) == pair:
                    parts = parts[:i] + [pair[0] + pair[1]] + parts[i + 2:]
                    break                                     # only the first occurrence of each merge
        return parts


# --------------------------------------------------------------------------- BPETokenizer: cases

SPECIALS = ["<|endoftext|>", "<|endoftext|><|endoftext|>", "<|im_start|>", "<|im_end|>"]
TRAINING_TEXT = CORPUS + " " + CODE + " " + DIGITS + " " + EMOJI + " " + CONTRACTIONS + " 你好，世界！ " + NUMBERS


@cache
def _trained():
    return train_bpe_spec(TRAINING_TEXT, 256 + 90 + len(SPECIALS), tuple(SPECIALS))


def _session(*calls, specials=True):
    vocab, merges = _trained()
    return Session(init=((vocab, merges, list(SPECIALS) if specials else None), {}), calls=list(calls))


def _ranked(*calls):
    """Merges learned (b, c) first, then (a, b): 'abc' is a + bc by rank, although (a, b) comes first in it."""
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"b", b"c"), (b"a", b"b"), (b" ", b"a"), (b"a", b"bc")]
    for pair in merges:
        vocab[len(vocab)] = pair[0] + pair[1]
    return Session(init=((vocab, merges), {}), calls=list(calls))


def _decode_last(results):
    return (results[-1],), {}


def _tokenizer_cases():
    mixed = "机器学习让机器从数据中学习。<|endoftext|>the cat sat on the mat"
    chat = "<|im_start|>user\n你好<|im_end|><|im_start|>assistant\n你好，世界！<|im_end|><|endoftext|>"
    cut = bytes([230, 156, 186, 229])                     # '机' (e6 9c ba), then the first byte of a character
    return [
        case(_session, method("encode", "机器学习是人工智能的一个分支"), method("decode", feed=_decode_last),
             note="Chinese, encoded then decoded"),
        case(_session, method("encode", "the cat ate the rat"), method("decode", feed=_decode_last),
             note="English"),
        case(_session, method("encode", mixed), method("decode", feed=_decode_last),
             note="a special token between Chinese and English"),
        case(_session, method("encode", chat), method("decode", feed=_decode_last),
             note="special tokens next to each other and to text (a chat template)"),
        case(_session, method("encode", "a<|endoftext|><|endoftext|>b<|endoftext|>"),
             note="one special token inside another: the longest first"),
        case(_session, method("decode", list(cut)), note="ids that end inside a character: U+FFFD"),
        case(_session, method("decode", [101, 230, 156, 104, 105]),
             note="a character cut in the middle of the ids: U+FFFD"),
        case(_session, method("encode", ""), method("decode", []), note="the empty string"),
        case(_session, method("encode", "大语言模型 large language models 😀 👍🏽"),
             method("decode", feed=_decode_last), specials=False, note="no special tokens; emoji"),
        case(_session, method("encode", "hello <|endoftext|> world"), specials=False,
             note="special_tokens=None: '<|endoftext|>' is plain text"),
        case(_ranked, method("encode", "abc abcd ab bc"), note="merges (b, c) then (a, b): by rank, not leftmost"),
        case(_ranked, method("encode", "ababab abab"), note="every occurrence of a merge in a word"),
        case(_session, method("encode", "  你好，世界！\n\n\n    return x  \n"), method("decode", feed=_decode_last),
             note="runs of spaces and newlines at both ends"),
        case(_session, method("encode", "2024年3月15日 12345 3.14159"), method("decode", feed=_decode_last),
             note="digits"),
        case(_session, method("encode", "I'M don't THEY'RE"), note="contractions"),
        case(_session, method("encode", "nai\u0308ve cafe\u0301 Cafe\u0301"), method("decode", feed=_decode_last),
             note="combining accents (decomposed text): the bytes as given, no normalisation"),
        case(_session, method("encode", NUMBERS), method("decode", feed=_decode_last),
             note="superscripts, fractions, circled numbers: Unicode numbers, not letters"),
        case(_session, method("encode", random_text(120, 11)), method("decode", feed=_decode_last),
             note="random Unicode, round trip"),
        case(_session, method("encode", random_text(80, 12) + "<|im_end|>" + random_text(40, 13)),
             method("decode", feed=_decode_last), note="random Unicode around a special token"),
    ]


def _round_trip(call):
    """decode(encode(s)) == s on 100 random Unicode strings, each call under the time limit."""
    vocab, merges = _trained()
    tok = call(vocab, merges, list(SPECIALS))
    for k in range(100):
        s = random_text(1 + k % 40, 1000 + k)
        if k % 7 == 0:
            s += SPECIALS[k % len(SPECIALS)] + random_text(5, 2000 + k)
        with time_limit(2.0):
            back = tok.decode(tok.encode(s))
        if back != s:
            return msg("decode(encode(s)) gave {back!r} for s = {s!r}", back=back, s=s)
    return None


def _byte_stand_ins() -> dict[int, str]:
    """GPT-2's printable stand-in character for every byte (how `tokenizers` stores byte-level tokens)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return dict(zip(printable + others, map(chr, printable + [256 + k for k in range(len(others))])))


class LibraryTokenizer:
    """The `tokenizers` library's BPE model with GPT-2's byte-level pre-tokenizer, loaded with the same vocabulary
    and merges (for the bench: the same ids as the contract's)."""

    def __init__(self, vocab, merges, special_tokens=None):
        from tokenizers import Tokenizer, models, pre_tokenizers
        stand_in = _byte_stand_ins()
        spell = lambda b: "".join(stand_in[x] for x in b)
        self.tok = Tokenizer(models.BPE(vocab={spell(b): i for i, b in vocab.items()},
                                        merges=[(spell(a), spell(b)) for a, b in merges]))
        self.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)

    def encode(self, text):
        return self.tok.encode(text).ids


def _bench_tokenizer_inputs():
    """A vocabulary of 1,000 trained by the library on the bench text (fast), then that text to encode."""
    import json
    text = _bench_text()
    model = json.loads(train_with_tokenizers(text, 1000).to_str())["model"]
    byte_of = {c: b for b, c in _byte_stand_ins().items()}
    unspell = lambda s: bytes(byte_of[c] for c in s)
    vocab = {i: unspell(token) for token, i in model["vocab"].items()}
    merges = [tuple(unspell(p) for p in (m if isinstance(m, list) else m.split(" "))) for m in model["merges"]]
    return ((vocab, merges), {}), ((text,), {})


BPE_TOKENIZER = PlainClassExercise(
    name="BPETokenizer",
    chapter="tokenization/bpe",
    signature="BPETokenizer(vocab, merges, special_tokens=None); encode(text), decode(ids)",
    oracle=BPETokenizerSpec,
    cases=_tokenizer_cases,
    bench=(_bench_tokenizer_inputs, LibraryTokenizer, "encode"),
    properties=[Property("decode(encode(s)) == s on 100 random Unicode strings", _round_trip)],
    hints=(
        "encode: cut the text at the special tokens (longest first, kept as pieces), pre-tokenize the rest with "
        "GPT-2's pattern, and merge each pre-token's bytes by rank   (eq. bpe-encode)",
        "in a pre-token, merge the adjacent pair with the lowest rank (the earliest merge learned), then look "
        "again, until no pair of the word is a merge; a special token maps straight to its id",
        "decode: b''.join(vocab[i] for i in ids).decode('utf-8', errors='replace'): join the bytes of every id "
        "first, then decode once",
    ),
    mistakes=[
        Mistake("special tokens encoded as text", _SpecialsAsText,
                "your special tokens come out as ordinary text ('<', '|', 'end'...): cut the text at the special "
                "tokens first and give each its own id"),
        Mistake("shortest special token first", _ShortestSpecialFirst,
                "when one special token contains another ('<|endoftext|><|endoftext|>' holds '<|endoftext|>'), "
                "match the longest first: sort the special tokens by length, longest first"),
        Mistake("special tokens dropped", _SpecialsDropped,
                "your special tokens vanish from the ids: re.split without a capturing group drops the separators; "
                "split with '(' + alternation + ')' to keep them"),
        Mistake("decodes token by token", _DecodesTokenByToken,
                "you decode each token's bytes on its own: a character's UTF-8 bytes may be spread over several "
                "tokens, so join all the bytes first and decode once"),
        Mistake("strict decoding", _StrictDecode,
                "decode with errors=\"replace\": ids can end in the middle of a UTF-8 character (a model "
                "generating token by token), and then that character becomes U+FFFD instead of an exception"),
        Mistake("leftmost merge first", _LeftmostMergeFirst,
                "you merge the leftmost pair that has a merge; merge the pair with the lowest rank (learned "
                "first) anywhere in the word, then look again"),
        Mistake("merges across pre-tokens", _NoPreTokens,
                "you encode the text between special tokens as one word: pre-tokenize it with GPT-2's pattern "
                "first, as in training, so that no merge crosses a pre-token boundary"),
        Mistake("longest match in the vocabulary", _LongestMatch,
                "you take the longest vocabulary entry at each position (WordPiece's greedy match); BPE applies "
                "its merges in rank order, which can segment differently"),
        Mistake("each merge applied once", _FirstOccurrenceOnly,
                "each merge must replace every occurrence of its pair in the word, not only the first"),
    ],
)

register(TRAIN_BPE, BPE_TOKENIZER)
