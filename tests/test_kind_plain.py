"""The plain kind (utils/grader/kinds/plain.py) and the readable differences of plain values
(utils/grader/compare.py): the book's own declarations of edit_distance and min_window_substring (Part 15,
utils/grader/exercises/warmups/warmups.py) and viterbi_decode (Part 13, utils/grader/exercises/sequences/crf.py);
and examples of the plain kind written here for fixed signatures graded by other kinds or chapters: a
top_k_largest (the chapter grades it with the counting kind), a byte-level train_bpe and a BPETokenizer class
(Part 8), with Chinese and other UTF-8 text throughout.

What the tests prove, for each declaration: correct solutions in several styles pass; every registered
mistake is rejected and diagnosed by name; plausible unregistered wrong solutions are rejected without a
false diagnosis; bad input (an exception, None, a wrong type, an endless loop, a forbidden call, an argument
changed in place) gets its own clear message; verdicts are identical run after run; a check is fast. And
the messages themselves: the first differing index or key, nested paths, a window of text around the first
difference with non-printables escaped, length mismatches said as such, list versus tuple named.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import re
import time
from collections import Counter
from functools import cache

import pytest
import torch
from kindcheck import named, timed

from utils.grader.compare import Verdict, compare, same
from utils.grader.core import Mistake, evaluate
from utils.grader.inputs import call, case
from utils.grader.kinds.plain import PlainClassExercise, PlainExercise, Session, method
from utils.grader.registry import get as get_exercise

# =========================================================================== edit_distance (Part 15)


def edit_distance_table(a, b):
    m, n = len(a), len(b)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m + 1):
        dp[i][0] = i
    for j in range(n + 1):
        dp[0][j] = j
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if a[i - 1] == b[j - 1]:
                dp[i][j] = dp[i - 1][j - 1]
            else:
                dp[i][j] = 1 + min(dp[i - 1][j], dp[i][j - 1], dp[i - 1][j - 1])
    return dp[m][n]


def edit_distance_memo(a, b):
    @cache
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def _position_by_position(a, b):
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def _wrong_index(a, b):
    dp = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + (a[i] != b[j]))
    return dp[-1][-1]


# The warm-ups chapter's own declarations (utils/grader/exercises/warmups/warmups.py).
EDIT_DISTANCE, MIN_WINDOW = get_exercise("edit_distance"), get_exercise("min_window_substring")
edit_distance_oracle = EDIT_DISTANCE.oracle


# =========================================================================== min_window_substring (Part 15)


def min_window_sliding(s, t):
    need, missing = Counter(t), len(t)
    if not t:
        return ""
    left, best = 0, (0, 0)
    for right, c in enumerate(s, 1):
        if need[c] > 0:
            missing -= 1
        need[c] -= 1
        if missing == 0:
            while need[s[left]] < 0:
                need[s[left]] += 1
                left += 1
            if best == (0, 0) or right - left < best[1] - best[0]:
                best = (left, right)
            need[s[left]] += 1
            missing += 1
            left += 1
    return s[best[0]:best[1]]


def min_window_two_pointers(s, t):
    """Counts in a dict and a `formed` counter, as the textbook writes it."""
    if not s or not t:
        return ""
    target = Counter(t)
    window, formed, l, ans = {}, 0, 0, (float("inf"), 0, 0)
    for r, ch in enumerate(s):
        window[ch] = window.get(ch, 0) + 1
        if ch in target and window[ch] == target[ch]:
            formed += 1
        while l <= r and formed == len(target):
            if r - l + 1 < ans[0]:
                ans = (r - l + 1, l, r)
            window[s[l]] -= 1
            if s[l] in target and window[s[l]] < target[s[l]]:
                formed -= 1
            l += 1
    return "" if ans[0] == float("inf") else s[ans[1]:ans[2] + 1]


def _last_shortest(s, t):
    if not s or not t:
        return ""
    target = Counter(t)
    window, formed, l, ans = {}, 0, 0, (float("inf"), 0, 0)
    for r, ch in enumerate(s):
        window[ch] = window.get(ch, 0) + 1
        if ch in target and window[ch] == target[ch]:
            formed += 1
        while l <= r and formed == len(target):
            if r - l + 1 <= ans[0]:                      # <= keeps the last of the shortest
                ans = (r - l + 1, l, r)
            window[s[l]] -= 1
            if s[l] in target and window[s[l]] < target[s[l]]:
                formed -= 1
            l += 1
    return "" if ans[0] == float("inf") else s[ans[1]:ans[2] + 1]


# =========================================================================== top_k_largest (Part 15)

def top_k_oracle(nums, k):
    return sorted(nums, reverse=True)[:k]


def top_k_heap(nums, k):
    """A min-heap of size k written by hand."""
    heap = []

    def sift_up(i):
        while i and heap[(i - 1) // 2] > heap[i]:
            heap[i], heap[(i - 1) // 2] = heap[(i - 1) // 2], heap[i]
            i = (i - 1) // 2

    def sift_down(i):
        while True:
            small = i
            for c in (2 * i + 1, 2 * i + 2):
                if c < len(heap) and heap[c] < heap[small]:
                    small = c
            if small == i:
                return
            heap[i], heap[small] = heap[small], heap[i]
            i = small

    for x in nums:
        if len(heap) < k:
            heap.append(x)
            sift_up(len(heap) - 1)
        elif k and x > heap[0]:
            heap[0] = x
            sift_down(0)
    out = []
    while heap:
        heap[0], heap[-1] = heap[-1], heap[0]
        out.append(heap.pop())
        sift_down(0)
    return out[::-1]


def top_k_selection(nums, k):
    rest, out = list(nums), []
    for _ in range(min(k, len(rest))):
        i = max(range(len(rest)), key=rest.__getitem__)
        out.append(rest.pop(i))
    return out


def _ascending(nums, k):
    return top_k_heap(nums, k)[::-1]


def _sorts_in_place(nums, k):
    nums.sort(reverse=True)
    return nums[:k]


def _smallest(nums, k):
    return sorted(nums)[:k]


def _no_duplicates(nums, k):
    return sorted(set(nums), reverse=True)[:k]


TOP_K_MISTAKES = [
    Mistake("ascending order", _ascending,
            "return the k largest in decreasing order: a min-heap pops its smallest first, so reverse what it pops"),
    Mistake("sorts the input in place", _sorts_in_place,
            "your code sorts `nums` in place: the caller's list must stay as it was (work on a copy, or keep "
            "your own heap)"),
    Mistake("k smallest", _smallest,
            "you return the k smallest: keep a min-heap of the k largest seen so far (replace its root when a "
            "larger number comes)"),
    Mistake("drops duplicates", _no_duplicates,
            "equal numbers count separately: the 3 largest of [5, 5, 4] are [5, 5, 4]"),
]


def top_k_cases():
    r = random.Random(7)
    big = [r.randint(-1000, 1000) for _ in range(500)]
    return [
        case(call, [3, 1, 4, 1, 5, 9, 2, 6], 3, note="small"),
        case(call, [5, 5, 4, 4, 3], 3, note="duplicates"),
        case(call, [-3, -1, -2], 2, note="negatives"),
        case(call, [7, 2, 9], 0, note="k = 0"),
        case(call, [7, 2, 9], 3, note="k = len(nums)"),
        case(call, [1.5, -0.5, 2.25, 2.25], 2, note="floats with a tie"),
        case(call, big, 10, note="500 numbers"),
    ]


TOP_K = PlainExercise(
    name="top_k_largest", chapter="warmups/warmups", signature="top_k_largest(nums, k)",
    oracle=top_k_oracle, cases=top_k_cases, mistakes=TOP_K_MISTAKES, forbidden=("heapq.nlargest",),
    hint="a min-heap of size k: push while it is smaller than k, then replace the root when a larger number comes")


# =========================================================================== train_bpe (Part 8)
# train_bpe(text, vocab_size, special_tokens=()) -> (vocab, merges): byte-level, as CS336. This declaration
# pre-tokenizes with a stdlib-`re` rendering of GPT-2's pattern (letters [^\W\d_] for \p{L}), to stay fast and
# free of the `regex` package; the chapter's declaration uses GPT-2's own pattern.

PAT = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")


def _chunks(text, special_tokens):
    """The text split on the special tokens (longest first), which are dropped: they never merge."""
    if not special_tokens:
        return [text]
    alternation = "|".join(re.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
    return re.split(alternation, text)


def _words(text, special_tokens, pattern=PAT):
    """{pre-token as a tuple of single bytes: count}."""
    counts = Counter()
    for chunk in _chunks(text, special_tokens):
        for w in pattern.findall(chunk):
            counts[tuple(bytes([b]) for b in w.encode("utf-8"))] += 1
    return counts


def _merge_word(word, pair, new, right_to_left=False):
    out, i = [], 0
    if right_to_left:
        word, pair = word[::-1], pair[::-1]
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out[::-1]) if right_to_left else tuple(out)


def train_bpe_oracle(text, vocab_size, special_tokens=(), *, tie=max, words=None, right_to_left=False,
                     specials_first=False):
    """The plain specification: count adjacent pairs in every pre-token, merge the most frequent (ties: the
    lexicographically greatest pair), until vocab_size. The keyword-only flags give mistakes' behaviour."""
    words = dict(words if words is not None else _words(text, special_tokens))
    vocab = {i: bytes([i]) for i in range(256)}
    if specials_first:
        for s in special_tokens:
            vocab[len(vocab)] = s.encode("utf-8")
    merges = []
    while len(vocab) + (0 if specials_first else len(special_tokens)) < vocab_size:
        pairs = Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += n
        if not pairs:
            break
        top = max(pairs.values())
        pair = tie(p for p, n in pairs.items() if n == top)
        new = pair[0] + pair[1]
        merges.append(pair)
        vocab[len(vocab)] = new
        merged = Counter()
        for w, n in words.items():
            merged[_merge_word(w, pair, new, right_to_left)] += n
        words = merged
    if not specials_first:
        for s in special_tokens:
            vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


def train_bpe_incremental(text, vocab_size, special_tokens=()):
    """Pair counts updated incrementally, only for the words that contain the merged pair."""
    words = _words(text, special_tokens)
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    pairs = Counter()
    where = {}
    for w, n in words.items():
        for p in zip(w, w[1:]):
            pairs[p] += n
            where.setdefault(p, set()).add(w)
    budget = vocab_size - 256 - len(special_tokens)
    while len(merges) < budget:
        pairs = +pairs
        if not pairs:
            break
        pair = max(pairs, key=lambda p: (pairs[p], p))
        new = pair[0] + pair[1]
        merges.append(pair)
        vocab[256 + len(merges) - 1] = new
        for w in list(where.get(pair, ())):
            if w not in words:
                continue
            n = words.pop(w)
            for p in zip(w, w[1:]):
                pairs[p] -= n
            nw = _merge_word(w, pair, new)
            words[nw] = words.get(nw, 0) + n
            for p in zip(nw, nw[1:]):
                pairs[p] += n
                where.setdefault(p, set()).add(nw)
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


def _tie_first_seen(text, vocab_size, special_tokens=()):
    return train_bpe_oracle(text, vocab_size, special_tokens, tie=lambda ps: next(iter(ps)))


def _tie_smallest(text, vocab_size, special_tokens=()):
    return train_bpe_oracle(text, vocab_size, special_tokens, tie=min)


def _no_pretokens(text, vocab_size, special_tokens=()):
    words = Counter(tuple(bytes([b]) for b in chunk.encode("utf-8")) for chunk in _chunks(text, special_tokens))
    return train_bpe_oracle(text, vocab_size, special_tokens, words=words)


def _right_to_left(text, vocab_size, special_tokens=()):
    return train_bpe_oracle(text, vocab_size, special_tokens, right_to_left=True)


def _specials_first(text, vocab_size, special_tokens=()):
    return train_bpe_oracle(text, vocab_size, special_tokens, specials_first=True)


def _specials_merged(text, vocab_size, special_tokens=()):
    vocab, merges = train_bpe_oracle(text, vocab_size, special_tokens, words=_words(text, ()))
    return vocab, merges


BPE_MISTAKES = [
    Mistake("ties to the first pair seen", _tie_first_seen,
            "among equally frequent pairs take the lexicographically greatest, max(pairs) compared as (bytes, "
            "bytes), not the first one counted"),
    Mistake("ties to the smallest pair", _tie_smallest,
            "ties go to the lexicographically greatest pair (max), not the smallest"),
    Mistake("merges across pre-tokens", _no_pretokens,
            "pre-tokenize first (GPT-2's pattern): pairs never cross a pre-token boundary, such as the space "
            "before a word"),
    Mistake("merges right to left", _right_to_left,
            "replace a pair's occurrences left to right without overlap: 'aaa' with the merge (a, a) becomes "
            "'aa' + 'a'"),
    Mistake("special tokens before the merges", _specials_first,
            "special tokens come after the merges: ids 0-255 the bytes, then one id per merge, then the special "
            "tokens"),
    Mistake("special tokens merged", _specials_merged,
            "split the text on the special tokens before counting: a special token never takes part in a merge"),
]

CORPUS = ("低碳生活，从我做起。机器学习是人工智能的一个分支，机器学习让机器从数据中学习。"
          "the cat sat on the mat; the cat ate the rat. 大语言模型 large language models 大语言模型!! "
          "aaaa aaa aa a 1234 12 3.14")


def bpe_cases():
    return [
        case(call, "low low low lower lowest newer newer wider", 256 + 10, note="the classic toy corpus"),
        case(call, CORPUS, 256 + 30, note="Chinese and English"),
        case(call, CORPUS, 256 + 25 + 1, ("<|endoftext|>",), note="one special token"),
        case(call, "你好<|endoftext|>世界你好<|endoftext|>你好世界<|im_end|>你好", 256 + 8 + 2,
             ("<|endoftext|>", "<|im_end|>"), note="two special tokens, Chinese"),
        case(call, "aaaaaaa aaaa aaaaa", 256 + 4, note="runs of one byte: merges without overlap"),
        case(call, "ab ab ab", 256 + 50, note="vocab_size larger than the merges available"),
        case(call, "😀 😀😀 emoji 😀", 256 + 6, note="4-byte UTF-8"),
    ]


TRAIN_BPE = PlainExercise(
    name="train_bpe", chapter="tokenization/bpe", signature="train_bpe(text, vocab_size, special_tokens=())",
    oracle=train_bpe_oracle, cases=bpe_cases, mistakes=BPE_MISTAKES, returns=("vocab", "merges"),
    hint="count pairs inside every pre-token, merge the most frequent (ties: max), repeat until vocab_size")


# =========================================================================== BPETokenizer (Part 8)

class BPETokenizerOracle:
    """encode: special tokens (longest first) to their ids; every other pre-token by applying the merges in
    rank order; decode: join the bytes, decode UTF-8 with errors="replace"."""

    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab = dict(vocab)
        self.ids = {b: i for i, b in self.vocab.items()}
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.special_tokens = sorted(special_tokens or [], key=len, reverse=True)

    def _word(self, word: bytes) -> list[int]:
        parts = [bytes([b]) for b in word]
        while len(parts) > 1:
            ranked = [(self.ranks.get(p, float("inf")), i) for i, p in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranked)
            if rank == float("inf"):
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.ids[p] for p in parts]

    def encode(self, text):
        out = []
        if self.special_tokens:
            pieces = re.split("(" + "|".join(re.escape(s) for s in self.special_tokens) + ")", text)
        else:
            pieces = [text]
        for piece in pieces:
            if piece in self.special_tokens:
                out.append(self.ids[piece.encode("utf-8")])
                continue
            for w in PAT.findall(piece):
                out += self._word(w.encode("utf-8"))
        return out

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


class BPETokenizerMergeOrder(BPETokenizerOracle):
    """Another correct style: every merge in training order applied to the whole word."""

    def __init__(self, vocab, merges, special_tokens=None):
        super().__init__(vocab, merges, special_tokens)
        self.merges = list(merges)

    def _word(self, word):
        parts = tuple(bytes([b]) for b in word)
        for pair in self.merges:
            parts = _merge_word(parts, pair, pair[0] + pair[1])
        return [self.ids[p] for p in parts]


class _SpecialsIgnored(BPETokenizerOracle):
    def __init__(self, vocab, merges, special_tokens=None):
        super().__init__(vocab, merges, None)


class _ShortestSpecialFirst(BPETokenizerOracle):
    def __init__(self, vocab, merges, special_tokens=None):
        super().__init__(vocab, merges, special_tokens)
        self.special_tokens = sorted(special_tokens or [], key=len)


class _DecodesTokenByToken(BPETokenizerOracle):
    def decode(self, ids):
        return "".join(self.vocab[i].decode("utf-8", errors="replace") for i in ids)


class _StrictDecode(BPETokenizerOracle):
    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8")


class _FirstPairInWord(BPETokenizerOracle):
    """Merges the leftmost pair that has any merge, not the best-ranked one."""

    def _word(self, word):
        parts = [bytes([b]) for b in word]
        merged = True
        while merged:
            merged = False
            for i, p in enumerate(zip(parts, parts[1:])):
                if p in self.ranks:
                    parts[i:i + 2] = [p[0] + p[1]]
                    merged = True
                    break
        return [self.ids[p] for p in parts]


TOKENIZER_MISTAKES = [
    Mistake("special tokens ignored", _SpecialsIgnored,
            "split the text on the special tokens first and map each to its own id; never encode them as text"),
    Mistake("shortest special token first", _ShortestSpecialFirst,
            "when special tokens overlap ('<|endoftext|>' inside '<|endoftext|><|endoftext|>'), match the "
            "longest first"),
    Mistake("decodes token by token", _DecodesTokenByToken,
            "decode the joined bytes, not each token's bytes on its own: a Chinese character's 3 bytes may be "
            "split over several tokens"),
    Mistake("strict decoding", _StrictDecode,
            "decode with errors=\"replace\": ids may end in the middle of a UTF-8 character"),
    Mistake("leftmost merge first", _FirstPairInWord,
            "apply the merges by rank: in each word merge the pair that was learned first (lowest rank), not the "
            "leftmost pair that has a merge"),
]

SPECIALS = ["<|endoftext|>", "<|endoftext|><|endoftext|>"]


@cache
def _trained(vocab_size=256 + 40):
    return train_bpe_oracle(CORPUS, vocab_size, tuple(SPECIALS))


def _tokenizer_session(*calls, specials=True):
    vocab, merges = _trained()
    return Session(init=((vocab, merges, list(SPECIALS) if specials else None), {}), calls=list(calls))


def _decode_last(results):
    return (results[-1],), {}


def tokenizer_cases():
    mixed = "机器学习让机器从数据中学习。<|endoftext|>the cat sat on the mat"
    return [
        case(_tokenizer_session, method("encode", "机器学习是人工智能的一个分支"), method("decode", feed=_decode_last),
             note="Chinese, encoded then decoded"),
        case(_tokenizer_session, method("encode", "the cat ate the rat"), method("decode", feed=_decode_last),
             note="English"),
        case(_tokenizer_session, method("encode", mixed), method("decode", feed=_decode_last),
             note="a special token between Chinese and English"),
        case(_tokenizer_session, method("encode", "a<|endoftext|><|endoftext|>b<|endoftext|>"),
             note="overlapping special tokens: the longest first"),
        case(_tokenizer_session, method("decode", [230, 156, 186, 229]), note="ids ending inside a character"),
        case(_tokenizer_session, method("encode", ""), method("decode", []), note="the empty string"),
        case(_tokenizer_session, method("encode", "大语言模型 large language models 😀"),
             method("decode", feed=_decode_last), specials=False, note="no special tokens, an emoji"),
        case(_ranked_session, method("encode", "abc abcd ab bc"),
             note="merges (b, c) then (a, b): by rank, not leftmost"),
        case(_tokenizer_session, method("encode", "  你好，世界！\n\n"), method("decode", feed=_decode_last),
             note="spaces and newlines at both ends"),
    ]


def _ranked_session(*calls):
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"b", b"c"), (b"a", b"b"), (b" ", b"a")]
    for pair in merges:
        vocab[len(vocab)] = pair[0] + pair[1]
    return Session(init=((vocab, merges), {}), calls=list(calls))


BPE_TOKENIZER = PlainClassExercise(
    name="BPETokenizer", chapter="tokenization/bpe", signature="BPETokenizer(vocab, merges, special_tokens=None)",
    oracle=BPETokenizerOracle, cases=tokenizer_cases, mistakes=TOKENIZER_MISTAKES,
    hint="split on special tokens, pre-tokenize, merge each pre-token's bytes by rank; decode the joined bytes")

# =========================================================================== viterbi_decode (Part 13)
# viterbi_decode(emissions, transitions, start_transitions, end_transitions, mask=None) -> list[list[int]]:
# tensors in, plain nested lists out. The declaration is the book's own (utils/grader/exercises/sequences/crf.py:
# a brute-force oracle over every tag path); here, a correct candidate and two plausible wrong ones.

VITERBI = get_exercise("viterbi_decode")


def viterbi_torch(emissions, transitions, start_transitions, end_transitions, mask=None):
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
    score = start_transitions + emissions[:, 0]                              # (B, K)
    history = []
    for t in range(1, T):
        best, arg = (score[:, :, None] + transitions[None]).max(1)           # (B, K)
        new = best + emissions[:, t]
        score = torch.where(mask[:, t, None], new, score)
        history.append(arg)
    score = score + end_transitions
    paths = []
    for b in range(B):
        n = int(mask[b].sum())
        tag = int(score[b].argmax())
        path = [tag]
        for arg in reversed(history[:n - 1]):
            tag = int(arg[b, tag])
            path.append(tag)
        paths.append(path[::-1])
    return paths


def _viterbi_as_tensor(emissions, transitions, start_transitions, end_transitions, mask=None):
    return torch.tensor(viterbi_torch(emissions, transitions, start_transitions, end_transitions, None))


def _viterbi_in_place(emissions, transitions, start_transitions, end_transitions, mask=None):
    emissions[:, 0] += start_transitions             # folds the start scores in, into the caller's tensor
    return viterbi_torch(emissions, transitions, torch.zeros_like(start_transitions), end_transitions, mask)


DECLARATIONS = [EDIT_DISTANCE, MIN_WINDOW, TOP_K, TRAIN_BPE, BPE_TOKENIZER, VITERBI]


# =========================================================================== the tests

CORRECT = [(EDIT_DISTANCE, f) for f in (edit_distance_oracle, edit_distance_table, edit_distance_memo)] + \
          [(MIN_WINDOW, f) for f in (min_window_sliding, min_window_two_pointers)] + \
          [(TOP_K, f) for f in (top_k_heap, top_k_selection)] + \
          [(TRAIN_BPE, train_bpe_incremental), (BPE_TOKENIZER, BPETokenizerOracle),
           (BPE_TOKENIZER, BPETokenizerMergeOrder), (VITERBI, viterbi_torch)]
MISTAKES = [(ex, m) for ex in DECLARATIONS for m in ex.mistakes]


@pytest.mark.parametrize("ex,impl", CORRECT, ids=[f"{ex.name}: {f.__name__}" for ex, f in CORRECT])
def test_correct_solutions_pass_within_a_second(ex, impl):
    report, seconds = timed(ex, impl)
    assert report.passed, str(report)
    assert seconds < 1.0
    assert "inputs left unchanged" in str(report)


@pytest.mark.parametrize("ex,mistake", MISTAKES, ids=[f"{ex.name}: {m.name}" for ex, m in MISTAKES])
def test_every_mistake_is_rejected_and_named(ex, mistake):
    seconds = named(ex, mistake)
    assert seconds < 1.0


# --------------------------------------------------------------------------- plausible wrong solutions

def _lcs_length(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return max(len(a), len(b)) - dp[-1][-1]


def _length_difference(a, b):
    return abs(len(a) - len(b))


def _table_corner_off_by_one(a, b):
    m, n = len(a), len(b)
    dp = [[i + j if i * j == 0 else 0 for j in range(n + 1)] for i in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            dp[i][j] = min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return dp[m - 1][n - 1] if m and n else dp[m][n]


def _t_in_s(s, t):
    return t if t in s else ""


def _window_as_list(s, t):
    return list(min_window_sliding(s, t))


def _k_minus_one(nums, k):
    return sorted(nums, reverse=True)[:max(k - 1, 0)]


def _top_k_tuple(nums, k):
    return tuple(sorted(nums, reverse=True)[:k])


def _merges_as_lists(text, vocab_size, special_tokens=()):
    vocab, merges = train_bpe_oracle(text, vocab_size, special_tokens)
    return vocab, [list(m) for m in merges]


def _vocab_as_text(text, vocab_size, special_tokens=()):
    vocab, merges = train_bpe_oracle(text, vocab_size, special_tokens)
    return {i: b.decode("utf-8", errors="replace") for i, b in vocab.items()}, merges


def _one_merge_short(text, vocab_size, special_tokens=()):
    return train_bpe_oracle(text, vocab_size - 1, special_tokens)


def _vocab_only(text, vocab_size, special_tokens=()):
    return train_bpe_oracle(text, vocab_size, special_tokens)[0]


class _DecodeStrips(BPETokenizerOracle):
    def decode(self, ids):
        return super().decode(ids).strip()


class _EncodeTuple(BPETokenizerOracle):
    def encode(self, text):
        return tuple(super().encode(text))


UNREGISTERED = [
    (EDIT_DISTANCE, _lcs_length, "wrong-value"), (EDIT_DISTANCE, _length_difference, "wrong-value"),
    (EDIT_DISTANCE, _table_corner_off_by_one, "wrong-value"),
    (MIN_WINDOW, _t_in_s, "wrong-length"), (MIN_WINDOW, _window_as_list, "wrong-type"),
    (TOP_K, _k_minus_one, "wrong-length"), (TOP_K, _top_k_tuple, "wrong-type"),
    (TRAIN_BPE, _merges_as_lists, "wrong-type"), (TRAIN_BPE, _vocab_as_text, "wrong-type"),
    (TRAIN_BPE, _one_merge_short, "wrong-keys"), (TRAIN_BPE, _vocab_only, "wrong-type"),
    (BPE_TOKENIZER, _DecodeStrips, "wrong-value"), (BPE_TOKENIZER, _EncodeTuple, "wrong-type"),
    (VITERBI, _viterbi_as_tensor, "wrong-type"), (VITERBI, _viterbi_in_place, "mutated-input"),
]


@pytest.mark.parametrize("ex,impl,kind", UNREGISTERED, ids=[f.__name__.strip("_") for _, f, _ in UNREGISTERED])
def test_plausible_wrong_solutions_are_rejected_without_a_false_diagnosis(ex, impl, kind):
    report = evaluate(ex, impl)
    assert not report.passed and report.kind == kind, str(report)
    assert report.failure.mistake is None, str(report)


def test_the_type_mismatches_that_matter_are_named():
    assert "merges[0] is a list; expected a tuple" in evaluate(TRAIN_BPE, _merges_as_lists).failure.problem.message
    msg = evaluate(TRAIN_BPE, _vocab_as_text).failure.problem.message
    assert msg.startswith("vocab[0] is a str; expected bytes") and "encode" in msg
    assert "output is a list; expected a str" in evaluate(MIN_WINDOW, _window_as_list).failure.problem.message
    assert "output is a tuple; expected a list" in evaluate(TOP_K, _top_k_tuple).failure.problem.message
    msg = evaluate(TRAIN_BPE, _vocab_only).failure.problem.message
    assert msg == "output is a dict; expected a tuple of 2: (vocab, merges)"


def test_a_declaration_may_accept_either_sequence_type():
    lenient = dataclasses.replace(TRAIN_BPE, sequences="any")
    assert evaluate(lenient, _merges_as_lists).passed
    assert evaluate(lenient, lambda *a, **k: list(train_bpe_oracle(*a, **k))).passed
    assert not evaluate(TRAIN_BPE, lambda *a, **k: list(train_bpe_oracle(*a, **k))).passed


def test_a_shorter_vocab_says_which_ids_are_missing():
    msg = evaluate(TRAIN_BPE, _one_merge_short).failure.problem.message
    assert msg.startswith("vocab is missing 1 key: 265") and "merges" not in msg


# --------------------------------------------------------------------------- arguments changed in place

def test_an_argument_sorted_in_place_is_named_and_the_declaration_keeps_its_data():
    report = evaluate(TOP_K, _sorts_in_place)
    assert report.kind == "mutated-input" and "`nums`" in report.failure.problem.message
    assert "nums[0] differs after the call" in report.failure.problem.message
    assert report.failure.call == "top_k_largest([3, 1, 4, 1, 5, 9, 2, 6], 3)"     # as declared, not as sorted
    assert evaluate(TOP_K, _sorts_in_place).failure.problem.message == report.failure.problem.message
    assert evaluate(TOP_K, top_k_heap).passed


class _AddsSpecialsToVocab(BPETokenizerOracle):
    def __init__(self, vocab, merges, special_tokens=None):
        for s in special_tokens or []:
            if s.encode("utf-8") not in vocab.values():
                vocab[len(vocab)] = s.encode("utf-8")
        merges.append((b"x", b"y"))
        super().__init__(vocab, merges, special_tokens)


class _DecodeConsumesIds(BPETokenizerOracle):
    def decode(self, ids):
        out = b""
        while ids:
            out += self.vocab[ids.pop(0)]
        return out.decode("utf-8", errors="replace")


def test_a_tensor_argument_changed_in_place_is_named():
    report = evaluate(VITERBI, _viterbi_in_place)
    assert "your code changed its argument `emissions` in place (emissions differs after the call)" in str(report)


def test_nested_paths_are_named():
    def off_at_the_end(*args, **kwargs):
        paths = viterbi_torch(*args, **kwargs)
        paths[1][2] = (paths[1][2] + 1) % 3
        return paths
    report = evaluate(VITERBI, off_at_the_end)
    assert report.failure.case == 0 and report.failure.problem.where == "output[1][2]"


def test_a_constructor_or_method_changing_its_arguments_is_named():
    report = evaluate(BPE_TOKENIZER, _AddsSpecialsToVocab)
    assert report.kind == "mutated-input" and "your constructor changed its argument `merges`" in str(report)
    report = evaluate(BPE_TOKENIZER, _DecodeConsumesIds)
    assert report.kind == "mutated-input" and "your decode changed its argument `ids`" in str(report)


# --------------------------------------------------------------------------- bad input

def test_a_raising_function_shows_the_readers_line():
    def edit_distance(a, b):
        table = [[0] * len(b) for _ in a]
        return table[len(a)][len(b)]
    report = evaluate(EDIT_DISTANCE, edit_distance)
    assert report.kind == "exception" and "IndexError" in report.failure.problem.message
    assert "table[len(a)][len(b)]" in report.failure.frame


@pytest.mark.parametrize("impl,kind,words", [
    (lambda a, b: None, "returned-none", "return"),
    (lambda a, b: float(edit_distance_oracle(a, b)), "wrong-type", "exact int"),
    (lambda a, b: torch.tensor(edit_distance_oracle(a, b)), "wrong-type", "int(...)"),
    (lambda a, b: str(edit_distance_oracle(a, b)), "wrong-type", "str"),
], ids=["None", "float", "tensor", "str"])
def test_results_of_the_wrong_type(impl, kind, words):
    report = evaluate(EDIT_DISTANCE, impl)
    assert report.kind == kind and words in report.failure.problem.message, str(report)


def test_numpy_integers_are_accepted_as_ints():
    import numpy as np
    assert evaluate(EDIT_DISTANCE, lambda a, b: np.int64(edit_distance_oracle(a, b))).passed


def test_not_attempted_not_callable_endless_loop_and_forbidden_call():
    def stub(a, b):
        raise NotImplementedError
    assert evaluate(EDIT_DISTANCE, stub).status == "not attempted"
    assert evaluate(EDIT_DISTANCE, "kitten").kind == "wrong-type"

    def forever(a, b):
        while True:
            pass
    start = time.perf_counter()
    assert evaluate(dataclasses.replace(EDIT_DISTANCE, timeout=0.3), forever).kind == "timeout"
    assert time.perf_counter() - start < 3

    def uses_nlargest(nums, k):
        return heapq.nlargest(k, nums)
    report = evaluate(TOP_K, uses_nlargest)
    assert report.kind == "forbidden-call" and "heapq.nlargest" in report.failure.problem.message
    assert heapq.nlargest(2, [1, 3, 2]) == [3, 2]


def test_a_class_exercise_wants_the_class():
    assert "not an instance" in evaluate(BPE_TOKENIZER, BPETokenizerOracle(*_trained())).failure.problem.message
    report = evaluate(BPE_TOKENIZER, lambda vocab, merges, special_tokens=None: object())
    assert report.kind == "wrong-type"

    class NoDecode:
        def __init__(self, vocab, merges, special_tokens=None):
            self.inner = BPETokenizerOracle(vocab, merges, special_tokens)

        def encode(self, text):
            return self.inner.encode(text)
    report = evaluate(BPE_TOKENIZER, NoDecode)
    assert report.kind == "exception" and "AttributeError" in report.failure.problem.message
    assert "call 2, decode" in report.failure.problem.message


@pytest.mark.parametrize("ex,impl", [(EDIT_DISTANCE, _position_by_position), (MIN_WINDOW, _last_shortest),
                                     (TRAIN_BPE, _right_to_left), (BPE_TOKENIZER, _DecodesTokenByToken),
                                     (TOP_K, _sorts_in_place), (EDIT_DISTANCE, _wrong_index)])
def test_verdicts_are_identical_run_after_run(ex, impl):
    a, b = evaluate(ex, impl), evaluate(ex, impl)
    assert (a.failure.case, a.failure.problem.message, a.failure.mistake, a.failure.call) == \
           (b.failure.case, b.failure.problem.message, b.failure.mistake, b.failure.call)
    assert str(a) == str(b)


def test_the_oracle_outcome_is_deterministic():
    for ex in DECLARATIONS:
        for c in ex.all_cases():
            first, again = ex.outcome(ex.oracle, c, None), ex.outcome(ex.oracle, c, None)
            assert same([v for _, v in first.parts], [v for _, v in again.parts], rtol=0, atol=0)


# =========================================================================== readable differences (compare.py)

EXACT = {"sequences": "exact"}


def test_text_shows_the_first_difference_with_context():
    p = compare("机器学习是人工智能的一个分支，机器学习让机器从数据中学习",
                "机器学习是人工智能的一个分支，机器学习让计算机从数据中学习")
    assert p.kind == "wrong-value"
    assert "index 20 (29 characters; expected 28)" in p.message
    assert "expected '…能的一个分支，机器学习让⟨机⟩器从数据中学习'" in p.message       # cut on the left only
    assert "got '…能的一个分支，机器学习让⟨计⟩算机从数据中学习'" in p.message
    assert p.rows == [((20,), "机", "计")]


def test_text_escapes_what_cannot_be_printed():
    p = compare("a\tb\nc", "a\tb\x00c")
    assert "⟨\\n⟩" in p.message and "⟨\\x00⟩" in p.message and "\\t" in p.message


def test_text_too_short_or_too_long_is_said_as_such():
    p = compare("hello world", "hello")
    assert p.kind == "wrong-length" and "stops at index 5, 6 characters short" in p.message and "⟨ ⟩world" in p.message
    p = compare("hello", "hello!!")
    assert p.kind == "wrong-length" and "2 extra characters from index 5" in p.message
    p = compare("", "a")
    assert "1 extra character from index 0" in p.message


def test_bytes_are_compared_as_bytes():
    p = compare("中文".encode(), "中又".encode(), "vocab[300]")
    assert p.where == "vocab[300]" and "differs at index 3: expected b'\\xe4\\xb8\\xad⟨\\xe6⟩" in p.message
    assert compare(b"ab", "ab").kind == "wrong-type" and "decode" not in compare(b"ab", "ab").message
    assert "encode" in compare(b"ab", "ab").message
    assert "decode" in compare("ab", b"ab").message
    assert compare(b"ab", bytearray(b"ab")) is None and compare(b"ab", bytearray(b"ab"), tol=EXACT).kind == "wrong-type"


def test_lists_name_the_first_differing_index_and_the_length():
    assert compare([1, 2, 3], [1, 5, 3]).where == "output[1]"
    p = compare([[0, 1], [2, 3], [4, 5], [6, 7, 8]], [[0, 1], [2, 3], [4, 5], [6, 9, 8]])
    assert p.where == "output[3][1]" and "output[3][1] is 9; expected 7" in p.message
    p = compare([1, 2, 3, 4], [1, 2, 3])
    assert p.kind == "wrong-length" and "has 3 items; expected 4" in p.message
    assert "output[3] = 4 is missing" in p.message
    p = compare([1, 2], [1, 2, 7, 8])
    assert "extra items from output[2] = 7" in p.message
    p = compare([1, 2, 3, 4], [1, 9, 3])
    assert "has 3 items; expected 4" in p.message and "output[1] is 9; expected 2" in p.message


def test_list_and_tuple_differ_only_when_the_contract_fixes_them():
    assert compare([(b"a", b"b")], [[b"a", b"b"]]) is None
    p = compare([(b"a", b"b")], [[b"a", b"b"]], "merges", EXACT)
    assert p.kind == "wrong-type" and p.where == "merges[0]" and "is a list; expected a tuple" in p.message
    assert compare((1, 2), [1, 2], tol=EXACT).kind == "wrong-type"


def test_dicts_name_missing_and_unexpected_keys_then_the_first_differing_value():
    exp = {i: bytes([i % 256]) for i in range(260)}
    got = {i: bytes([i % 256]) for i in range(258)} | {300: b"x", 301: b"y"}
    got[5] = b"Z"
    p = compare(exp, got, "vocab")
    assert p.kind == "wrong-keys"
    assert "is missing 2 keys: 258, 259" in p.message and "has 2 unexpected keys: 300, 301" in p.message
    assert "vocab[5] differs first" in p.message
    many = compare({k: 0 for k in "abcdefgh"}, {})
    assert "missing 8 keys: 'a', 'b', 'c', 'd', 'e', ... (3 more)" in many.message
    p = compare({"merges": [(b"a", b"b")], "vocab": {257: b"ab"}}, {"merges": [(b"a", b"b")], "vocab": {257: b"ba"}})
    assert p.where == "output['vocab'][257]"


def test_floats_are_exact_in_plain_exercises_unless_declared():
    ex = PlainExercise(name="mean", chapter="x", signature="mean(xs)", oracle=lambda xs: sum(xs) / len(xs),
                       cases=lambda: [case(call, [0.1, 0.2, 0.3])])

    def backwards(xs):          # the same sum in another order: 0.6 instead of 0.6000000000000001, over 3
        return sum(reversed(xs)) / len(xs)
    report = evaluate(ex, backwards)
    assert report.kind == "wrong-value" and "0.200000000000000" in str(report)     # enough digits to see it
    assert evaluate(dataclasses.replace(ex, tolerance={float: (1e-12, 0.0)}), backwards).passed


def test_verdicts_compare_by_kind_and_key():
    assert compare(Verdict(), Verdict()) is None
    p = compare(Verdict(), Verdict("mutated-input", "changed", key="nums"), "arguments")
    assert (p.kind, p.message, p.where) == ("mutated-input", "changed", "arguments")
    assert same(Verdict("x", "one message", key=1), Verdict("x", "another message", key=1))
    assert not same(Verdict("x", key=1), Verdict("x", key=2))
