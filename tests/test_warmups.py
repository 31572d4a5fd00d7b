"""Part 15, coding warm-ups (utils/grader/exercises/warmups/warmups.py) and its two kinds: the exhaustive kind
(rand10_from_rand6, graded by walking every sequence of rand6 draws) and the counting kind (top_k_largest, its
comparisons counted).

What the tests prove: the oracles agree with independent references (exact fractions, brute force over every
substring and every edit sequence, heapq and torch.topk, hand-computed values); wrong code as candidates write it,
beyond the registered mistakes, is rejected; correct code in other styles passes; bad input (an exception, a
wrong type, an edited argument, a forbidden call, state kept between calls, an endless loop) gives its own clear
report; a check stays fast.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import time
from collections import Counter
from fractions import Fraction
from functools import cache, cmp_to_key

import numpy as np
import pytest
import torch

from utils.grader import get, run
from utils.grader.core import evaluate
from utils.grader.exercises.warmups import warmups as W
from utils.grader.kinds import Counted, explore
from utils.grader.sandbox import ForbiddenCall

# =========================================================================== the oracles against references


def test_rand10_spec_is_exactly_uniform_with_2_4_expected_calls():
    tree = explore(W.rand10_spec, sides=6, depth=10, runs=100_000)
    probs = [tree.probability(("int", r)) for r in range(1, 11)]
    undecided = Fraction(tree.undecided, tree.total)
    assert undecided == Fraction(1, 6 ** 5)                       # five rejected rounds in a row
    assert all(p == (1 - undecided) / 10 for p in probs)
    # E[calls] = 2.4 exactly; the walk's lower bound misses only the undecided tail
    assert 2.4 - 1e-3 < tree.expected_calls() <= 2.4


def test_explore_is_exact_on_a_single_draw_and_a_coin():
    one = explore(lambda die: die(), sides=6, depth=3)
    assert [one.probability(("int", v)) for v in range(1, 7)] == [Fraction(1, 6)] * 6
    assert one.undecided == 0 and one.expected_calls() == 1.0
    coin = explore(lambda die: 1 + die() % 2, sides=6, depth=1)
    assert coin.probability(("int", 1)) == coin.probability(("int", 2)) == Fraction(1, 2)


def _levenshtein_by_search(a, b):
    """Breadth-first search over single edits from a to b (tiny alphabets): the definition itself."""
    alphabet = sorted(set(a + b))
    seen, frontier, d = {a}, [a], 0
    while b not in seen:
        d += 1
        nxt = []
        for w in frontier:
            cands = [w[:i] + w[i + 1:] for i in range(len(w))]
            cands += [w[:i] + c + w[i:] for i in range(len(w) + 1) for c in alphabet]
            cands += [w[:i] + c + w[i + 1:] for i in range(len(w)) for c in alphabet]
            for x in cands:
                if x not in seen and len(x) <= max(len(a), len(b)) + 1:
                    seen.add(x)
                    nxt.append(x)
        frontier = nxt
    return d


def test_edit_distance_spec_against_search_and_hand_values():
    assert W.edit_distance_spec("kitten", "sitting") == 3
    assert W.edit_distance_spec("intention", "execution") == 5
    assert W.edit_distance_spec("", "abc") == 3 and W.edit_distance_spec("abc", "abc") == 0
    rng = random.Random(0)
    for _ in range(25):
        a = "".join(rng.choice("ab") for _ in range(rng.randint(0, 4)))
        b = "".join(rng.choice("ab") for _ in range(rng.randint(0, 4)))
        assert W.edit_distance_spec(a, b) == _levenshtein_by_search(a, b), (a, b)


def _min_window_brute(s, t):
    need = Counter(t)
    best = ""
    if not t:
        return ""
    for length in range(1, len(s) + 1):
        for i in range(len(s) - length + 1):
            have = Counter(s[i:i + length])
            if all(have[c] >= k for c, k in need.items()):
                return s[i:i + length]
    return best


def test_min_window_spec_against_brute_force():
    assert W.min_window_spec("ADOBECODEBANC", "ABC") == "BANC"
    rng = random.Random(1)
    for _ in range(200):
        s = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        t = "".join(rng.choice("abc") for _ in range(rng.randint(0, 4)))
        assert W.min_window_spec(s, t) == _min_window_brute(s, t), (s, t)


def test_top_k_spec_against_heapq_and_torch_topk():
    rng = random.Random(2)
    for _ in range(30):
        nums = [rng.randint(-20, 20) for _ in range(rng.randint(1, 40))]
        k = rng.randint(0, len(nums))
        assert W.top_k_spec(nums, k) == heapq.nlargest(k, nums)
        assert W.top_k_spec(nums, k) == torch.topk(torch.tensor(nums), k).values.tolist()


def test_the_comparison_bound_holds_for_the_textbook_heap_at_its_worst():
    """Ascending input sifts every newcomer to the bottom: the bound 4 (n log2(k+1) + k + 1) still holds."""
    for n, k in [(1, 1), (7, 7), (100, 3), (1000, 1), (1000, 31), (1000, 1000)]:
        tally = [0]
        W._min_heap_top_k([Counted(v, tally) for v in range(n)], k)
        assert tally[0] <= W._comparison_budget(list(range(n)), k), (n, k, tally[0])


# =========================================================================== the counting kind


def test_counted_counts_its_own_comparisons_and_refuses_built_ins():
    tally = [0]
    a, b = Counted(3, tally), Counted(5, tally)
    assert a < b and b > a and a <= 3 and 5 >= b and 4 > a and not b < 2
    assert tally[0] == 6
    assert (-a) < a and tally[0] == 7
    assert a == 3 and hash(a) == hash(3) and tally[0] == 7                  # equality is free
    for builtin in (lambda: sorted([a, b]), lambda: max(a, b), lambda: [b, a].sort(),
                    lambda: heapq.heapify([b, a, b])):
        with pytest.raises(ForbiddenCall):
            builtin()


# =========================================================================== wrong code, as candidates write it


def rand10_off_base(rand6):
    return (rand6() * 6 + rand6()) % 10 + 1                    # 7..42, then % 10: biased


def rand10_two_halves(rand6):
    half = 1 + rand6() % 2                                     # 1 or 2
    while True:
        five = rand6()
        if five <= 5:
            return half * 5 + five                             # 6..15


def rand10_keeps_leftovers(rand6, _spare=[]):                  # noqa: B006 - the bug: state kept between calls
    if _spare:
        return _spare.pop()
    while True:
        v = (rand6() - 1) * 6 + rand6()
        if v <= 30:
            _spare.append((v + 4) % 10 + 1)
            return (v - 1) % 10 + 1


def rand10_wasteful(rand6):
    while True:
        for _ in range(8):
            rand6()                                            # eight draws thrown away every round
        v = (rand6() - 1) * 6 + rand6()
        if v <= 30:
            return (v - 1) % 10 + 1


def rand10_retries_three_times(rand6):
    for _ in range(3):
        v = (rand6() - 1) * 6 + rand6()
        if v <= 30:
            return (v - 1) % 10 + 1
    return rand6()                                             # gives up: 1..6 favoured


def top_k_sorted_buffer(nums, k):
    """A sorted buffer of k, scanned from its low end: O(n k) on ascending input."""
    buf = []
    for x in nums:
        if len(buf) == k and (k == 0 or not x > buf[0]):
            continue
        i = 0
        while i < len(buf) and buf[i] < x:
            i += 1
        buf.insert(i, x)
        if len(buf) > k:
            buf.pop(0)
    return buf[::-1]


def top_k_strict_root(nums, k):
    return W._min_heap_top_k(nums, k)[:-1] + ([] if k == 0 else [])   # drops the k-th largest


def edit_transpositions_cost_1(a, b):
    """Optimal string alignment: an adjacent swap counted as one edit."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def edit_lcs_only(a, b):
    return max(len(a), len(b)) - sum(x == y for x, y in zip(a, b))


def window_formed_against_len_t(s, t):
    if not t:
        return ""
    need, have, formed, left, best = Counter(t), Counter(), 0, 0, None
    for right, ch in enumerate(s):
        have[ch] += 1
        if have[ch] == need[ch]:
            formed += 1
        while formed == len(t):                                # len(t), not the distinct characters
            if best is None or right + 1 - left < best[1] - best[0]:
                best = (left, right + 1)
            have[s[left]] -= 1
            if have[s[left]] < need[s[left]]:
                formed -= 1
            left += 1
    return s[best[0]:best[1]] if best else ""


def window_never_unformed(s, t):
    if not t:
        return ""
    need, have, formed, left, best = Counter(t), Counter(), 0, 0, None
    for right, ch in enumerate(s):
        have[ch] += 1
        if have[ch] == need[ch]:
            formed += 1
        while formed == len(need) and left <= right:
            if best is None or right + 1 - left < best[1] - best[0]:
                best = (left, right + 1)
            have[s[left]] -= 1                                 # forgets to lower `formed`
            left += 1
    return s[best[0]:best[1]] if best else ""


WRONG = [
    ("rand10_from_rand6", rand10_off_base, "not-uniform"),
    ("rand10_from_rand6", rand10_two_halves, "out-of-range"),
    ("rand10_from_rand6", rand10_keeps_leftovers, "not-a-function-of-draws"),
    ("rand10_from_rand6", rand10_wasteful, "undecided"),
    ("rand10_from_rand6", rand10_retries_three_times, "not-uniform"),
    ("top_k_largest", top_k_sorted_buffer, "comparisons"),
    ("top_k_largest", top_k_strict_root, None),
    ("edit_distance", edit_transpositions_cost_1, None),
    ("edit_distance", edit_lcs_only, None),
    ("min_window_substring", window_formed_against_len_t, None),
    ("min_window_substring", window_never_unformed, None),
]


@pytest.mark.parametrize("name,impl,kind", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_code_is_rejected_without_a_false_diagnosis(name, impl, kind):
    report = run(name, impl)
    assert not report.passed, f"{impl.__name__} passes {name}"
    if kind:
        assert report.kind == kind, str(report)
    if report.failure.mistake:                     # a diagnosis, if any, must be the mistake it really is
        assert impl is not None and report.failure.mistake in {m.name for m in get(name).mistakes}


# =========================================================================== correct code in other styles


def rand10_recycled(rand6):
    v = (rand6() - 1) * 6 + rand6()
    while v > 30:
        v = (v - 31) * 6 + rand6()                             # 31..36 is a fresh uniform draw of 6 values
    return (v - 1) % 10 + 1


def rand10_coin_and_five(rand6):
    coin = rand6() % 2                                         # 0 or 1, each 1/2
    five = rand6()
    while five == 6:
        five = rand6()
    return coin * 5 + five


def rand10_three_dice(rand6):
    while True:
        v = 36 * (rand6() - 1) + 6 * (rand6() - 1) + rand6() - 1   # 0..215
        if v < 210:
            return v % 10 + 1


def top_k_heapify_first(nums, k):
    """Floyd's heapify of the first k, then the scan; the result by repeated extraction into place."""
    h = list(nums[:k])

    def down(i, n):
        while 2 * i + 1 < n:
            c = 2 * i + 1
            if c + 1 < n and h[c + 1] < h[c]:
                c += 1
            if h[i] <= h[c]:
                break
            h[i], h[c] = h[c], h[i]
            i = c

    for i in range(k // 2 - 1, -1, -1):
        down(i, k)
    for x in nums[k:]:
        if k and x > h[0]:
            h[0] = x
            down(0, k)
    for end in range(k - 1, 0, -1):                            # in-place heap sort: descending for a min-heap
        h[0], h[end] = h[end], h[0]
        down(0, end)
    return h


def edit_memo(a, b):
    @cache
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def edit_numpy_rows(a, b):
    prev = np.arange(len(b) + 1)
    for i, ca in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return int(prev[-1])


def window_missing_counter(s, t):
    """LeetCode's editorial style: one `missing` counter, the need going negative for surplus characters."""
    need, missing = Counter(t), len(t)
    if not t:
        return ""
    left, best = 0, None
    for right, c in enumerate(s, 1):
        if need[c] > 0:
            missing -= 1
        need[c] -= 1
        if missing == 0:
            while need[s[left]] < 0:
                need[s[left]] += 1
                left += 1
            if best is None or right - left < best[1] - best[0]:
                best = (left, right)
            need[s[left]] += 1
            missing += 1
            left += 1
    return "" if best is None else s[best[0]:best[1]]


VALID = [("rand10_from_rand6", rand10_recycled), ("rand10_from_rand6", rand10_coin_and_five),
         ("rand10_from_rand6", rand10_three_dice), ("top_k_largest", top_k_heapify_first),
         ("edit_distance", edit_memo), ("edit_distance", edit_numpy_rows),
         ("min_window_substring", window_missing_counter)]


@pytest.mark.parametrize("name,impl", VALID, ids=[v[1].__name__ for v in VALID])
def test_correct_code_in_other_styles_passes(name, impl):
    report = run(name, impl)
    assert report.passed, str(report)


# =========================================================================== bad input


def test_bad_input_gives_a_clear_report():
    def raises(rand6):
        raise ValueError("boom")
    report = run("rand10_from_rand6", raises)
    assert report.kind == "exception" and "boom" in str(report)

    report = run("rand10_from_rand6", lambda rand6: np.int64(3 + rand6() % 2))
    assert report.kind == "wrong-type" and "int64" in str(report)

    report = run("rand10_from_rand6", lambda rand6: float("nan"))
    assert report.kind == "wrong-type"

    def python_rng(rand6):
        return random.randint(1, 10)
    assert run("rand10_from_rand6", python_rng).kind == "forbidden-call"
    assert run("rand10_from_rand6", lambda rand6: int(torch.randint(1, 11, ()))).kind == "forbidden-call"

    def heapifies_in_place(nums, k):
        heapq.heapify(nums)
        return []
    assert run("top_k_largest", heapifies_in_place).kind == "forbidden-call"

    def edits_nums(nums, k):
        nums.append(0)
        return W._min_heap_top_k(nums[:-1], k)
    report = run("top_k_largest", edits_nums)
    assert report.kind == "mutated-input" and "nums" in str(report)

    assert run("top_k_largest", lambda nums, k: torch.tensor([1.0])).kind is not None
    assert run("edit_distance", lambda a, b: str(len(a))).kind is not None
    assert run("min_window_substring", lambda s, t: None).kind is not None


def test_an_endless_loop_and_exponential_recursion_are_stopped_by_the_time_limit():
    quick = dataclasses.replace(get("rand10_from_rand6"), timeout=0.3)

    def spins(rand6):
        while True:
            pass
    report = evaluate(quick, spins)
    assert report.kind == "timeout"

    def plain_recursion(a, b):
        def d(i, j):
            if i == 0 or j == 0:
                return i + j
            return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
        return d(len(a), len(b))
    quick = dataclasses.replace(get("edit_distance"), timeout=0.5)
    report = evaluate(quick, plain_recursion)
    assert report.kind == "timeout"


def test_a_check_is_fast():
    for name, impl in [("rand10_from_rand6", rand10_recycled), ("top_k_largest", top_k_heapify_first)]:
        run(name, impl)                                        # the oracle's outcomes are cached by the first run
        start = time.process_time()
        assert run(name, impl).passed
        assert time.process_time() - start < 1.0


def test_the_timsort_comparisons_printed_by_the_chapter_exceed_the_bound():
    """The chapter prints that a full sort of 4,096 numbers needs more comparisons than the heap's bound at k = 2."""
    count = [0]

    def compare(x, y):
        count[0] += 1
        return (x > y) - (x < y)
    rng = random.Random(1)
    sorted([rng.random() for _ in range(4096)], key=cmp_to_key(compare))
    assert count[0] > W._comparison_budget([0] * 4096, 2)
