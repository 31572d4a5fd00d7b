"""Part 15, coding warm-ups: the puzzles interviews ask beside the ML questions (chapter warmups/warmups).

    rand10_from_rand6(rand6) -> int          an ExhaustiveExercise: the exact law over every sequence of draws
    top_k_largest(nums, k) -> list           a CountingExercise: exact, at most 4 (n log2(k+1) + k + 1) comparisons
    edit_distance(a, b) -> int               a PlainExercise
    min_window_substring(s, t) -> str        a PlainExercise

Oracles are plain specifications written here: a rejection sampler for rand10 (its own walk gives the parts
every reader must match: all hold), selection of the maximum k times for top-k, the full (m+1) x (n+1) table
for the edit distance, and for the window: from every start, the first end that covers t, read off per-character
prefix counts (the end never moves left as the start moves right).

The comparison bound of top_k_largest, and how its constant was chosen: a min-heap of size k makes at most
k log2 k comparisons to fill (sift-up), 1 + 2 floor(log2 k) per later number (the root, then two per level of
sift-down), and 2 log2 k per pop at the end, so at most n (1 + 2 log2 k) + 3 k log2 k <= n + 3 n log2(k + 1)
<= 4 n log2(k + 1) for 1 <= k <= n; c = 4, plus 4 (k + 1) for k = 0 and tiny inputs. At the sizes of the
large cases this separates: n = 4096, k = 1 allows 16,392 where any comparison sort needs about
n log2 n - 1.44 n = 43,000; k = 64 allows 99,000 where a scan of the k kept numbers per new one needs 262,144;
an ascending input makes a max-heap of all n pushed one by one cost n log2 n, and a sorted buffer of k scanned from
its low end cost n k.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from ...core import Mistake
from ...inputs import call, case
from ...kinds import CountingExercise, ExhaustiveExercise, PlainExercise, walk_to
from ...registry import register

# =========================================================================== rand10_from_rand6


def rand10_spec(rand6):
    """Rejection sampling written as a specification: two draws name one of 36 cells; cells 1..30 map onto
    1..10, three each; cells 31..36 start over."""
    while True:
        cell = 6 * (rand6() - 1) + (rand6() - 1)          # 0..35, each 1/36
        if cell < 30:
            return 1 + cell // 3


def _no_reject(rand6):
    v = (rand6() - 1) * 6 + rand6()
    return (v - 1) % 10 + 1


def _bound_40(rand6):
    while True:
        v = (rand6() - 1) * 6 + rand6()
        if v <= 40:
            return v % 10 + 1


def _sum_of_two(rand6):
    return (rand6() + rand6()) % 10 + 1


def _product(rand6):
    while True:
        v = rand6() * rand6()
        if v <= 30:
            return v % 10 + 1


def _zero_based(rand6):
    while True:
        v = (rand6() - 1) * 6 + rand6()
        if v <= 30:
            return (v - 1) % 10


def _redraw_second_only(rand6):
    first = rand6()
    while True:
        v = (first - 1) * 6 + rand6()
        if v <= 30:
            return (v - 1) % 10 + 1


def _six_folded_into_five(rand6):
    half = rand6() % 2                 # 0 or 1, each 1/2
    five = min(rand6(), 5)             # 6 folded onto 5
    return half * 5 + five


RAND10_MISTAKES = [
    Mistake("no rejection", _no_reject,
            "(rand6() - 1) * 6 + rand6() is uniform on 1..36, and 36 is not a multiple of 10: mapping all 36 values "
            "with % 10 gives 1..6 four chances and 7..10 three; keep 1..30 and draw again on 31..36"),
    Mistake("rejection bound 40", _bound_40,
            "(rand6() - 1) * 6 + rand6() never exceeds 36, so `v <= 40` rejects nothing and % 10 is biased: "
            "accept only 1..30 (the largest multiple of 10 not above 36)"),
    Mistake("sum of two draws", _sum_of_two,
            "the sum of two draws is not uniform (7 is six times as likely as 2): combine them as a two-digit "
            "number in base 6, (rand6() - 1) * 6 + rand6(), which is uniform on 1..36"),
    Mistake("product of two draws", _product,
            "the product of two draws is not uniform (many values cannot occur, 6 and 12 occur four times): "
            "use (rand6() - 1) * 6 + rand6(), uniform on 1..36"),
    Mistake("returns 0..9", _zero_based,
            "your values run from 0 to 9: rand10 returns 1..10, so add 1 after % 10"),
    Mistake("redraws only the second draw", _redraw_second_only,
            "after a rejection you redraw only the second draw: with a first draw of 6 every retry lands in "
            "31..36 again and never ends; draw both again"),
    Mistake("six folded into five", _six_folded_into_five,
            "min(rand6(), 5) gives 5 twice the probability of the others: to get rand5, draw again on 6 "
            "(reject it), never fold it onto another value"),
]


def _rand10_cases():
    return [
        case(walk_to, depth=2, note="two draws: one round of 36 equally likely cells"),
        case(walk_to, depth=3, note="three draws: a retry has started"),
        case(walk_to, depth=4, note="four draws: two rounds"),
        case(walk_to, depth=5, note="five draws: a third round has started"),
        case(walk_to, depth=7, runs=5_000, settle=0.01,
             note="up to 7 draws: at most 1% left undecided, expected draws within 3x rejection sampling's 2.4"),
    ]


RAND10 = ExhaustiveExercise(
    name="rand10_from_rand6",
    chapter="warmups/warmups",
    signature="rand10_from_rand6(rand6)",
    oracle=rand10_spec,
    cases=_rand10_cases,
    forbidden=("torch.randint", "torch.rand", "torch.randn", "torch.randperm", "torch.multinomial",
               "Tensor.random_", "Tensor.uniform_"),
    timeout=3.0,
    hints=("two draws make one of 36 equally likely cells, (rand6() - 1) * 6 + rand6(); 36 is not a multiple of 10, "
           "so some cells must be thrown away   (eq. wu-cells, wu-reject)",
           "keep the cells 1..30 (three per result) and draw both again on 31..36: every accepted cell has the same "
           "probability, and a round succeeds with probability 5/6   (eq. wu-reject)",
           "while True: v = (rand6() - 1) * 6 + rand6(); if v <= 30: return (v - 1) % 10 + 1   (eq. wu-calls: 2.4 "
           "draws on average)"),
    mistakes=RAND10_MISTAKES,
)

# =========================================================================== top_k_largest


def top_k_spec(nums, k):
    """Selection as a specification: k times, take the largest remaining number (the first of equals)."""
    rest, out = list(nums), []
    for _ in range(k):
        best = 0
        for i in range(1, len(rest)):
            if rest[i] > rest[best]:
                best = i
        out.append(rest.pop(best))
    return out


def _comparison_budget(nums, k):
    return 4 * (len(nums) * math.log2(k + 1) + k + 1)


def _min_heap_top_k(nums, k, *, fill_while=lambda size, k: size < k, reverse=True, wrong_way=False):
    """A min-heap of size k as candidates write it; the keywords give the mistakes below."""
    heap = []

    def sift_up(i):
        while i > 0 and heap[i] < heap[(i - 1) // 2]:
            heap[i], heap[(i - 1) // 2] = heap[(i - 1) // 2], heap[i]
            i = (i - 1) // 2

    def sift_down(i):
        n = len(heap)
        while True:
            pick, left, right = i, 2 * i + 1, 2 * i + 2
            if wrong_way:                      # follows the larger child: a max-heap's sift-down
                if left < n and heap[left] > heap[pick]:
                    pick = left
                if right < n and heap[right] > heap[pick]:
                    pick = right
            else:
                if left < n and heap[left] < heap[pick]:
                    pick = left
                if right < n and heap[right] < heap[pick]:
                    pick = right
            if pick == i:
                return
            heap[i], heap[pick] = heap[pick], heap[i]
            i = pick

    for x in nums:
        if fill_while(len(heap), k):
            heap.append(x)
            sift_up(len(heap) - 1)
        elif heap and x > heap[0]:
            heap[0] = x
            sift_down(0)
    out = []
    while heap:
        heap[0], heap[-1] = heap[-1], heap[0]
        out.append(heap.pop())
        sift_down(0)
    return out[::-1] if reverse else out


def _ascending(nums, k):
    return _min_heap_top_k(nums, k, reverse=False)


def _heap_of_k_plus_1(nums, k):
    return _min_heap_top_k(nums, k, fill_while=lambda size, k: size <= k)


def _sifts_wrong_way(nums, k):
    return _min_heap_top_k(nums, k, wrong_way=True)


def _max_heap_of_all(nums, k):
    heap = []
    for x in nums:                                     # a max-heap of every number, pushed one by one
        heap.append(x)
        i = len(heap) - 1
        while i > 0 and heap[i] > heap[(i - 1) // 2]:
            heap[i], heap[(i - 1) // 2] = heap[(i - 1) // 2], heap[i]
            i = (i - 1) // 2
    out = []
    for _ in range(k):
        heap[0], heap[-1] = heap[-1], heap[0]
        out.append(heap.pop())
        i, n = 0, len(heap)
        while True:
            big = i
            for c in (2 * i + 1, 2 * i + 2):
                if c < n and heap[c] > heap[big]:
                    big = c
            if big == i:
                break
            heap[i], heap[big] = heap[big], heap[i]
            i = big
    return out


def _scan_for_minimum(nums, k):
    if k == 0:
        return []
    kept = []
    for x in nums:
        if len(kept) < k:
            kept.append(x)
            continue
        low = 0
        for i in range(1, len(kept)):                  # O(k) per number: O(n k) in all
            if kept[i] < kept[low]:
                low = i
        if x > kept[low]:
            kept[low] = x
    out = []
    while kept:
        best = 0
        for i in range(1, len(kept)):
            if kept[i] > kept[best]:
                best = i
        out.append(kept.pop(best))
    return out


def _merge_sort(nums, k):
    def merge_sort(xs):
        if len(xs) <= 1:
            return list(xs)
        mid = len(xs) // 2
        left, right = merge_sort(xs[:mid]), merge_sort(xs[mid:])
        out, i, j = [], 0, 0
        while i < len(left) and j < len(right):
            if left[i] >= right[j]:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
        return out + left[i:] + right[j:]
    return merge_sort(nums)[:k]


TOP_K_MISTAKES = [
    Mistake("ascending order", _ascending,
            "the k largest must come in decreasing order: a min-heap pops its smallest first, so reverse what it "
            "pops"),
    Mistake("heap of k + 1", _heap_of_k_plus_1,
            "your heap keeps k + 1 numbers (`len(heap) <= k`): fill it while len(heap) < k, then only replace "
            "the root"),
    Mistake("sifts toward the larger child", _sifts_wrong_way,
            "your sift-down swaps with the larger child: in a min-heap the parent must move down toward the "
            "smaller child, or the root stops being the smallest of the k kept"),
    Mistake("max-heap of all n", _max_heap_of_all,
            "you push all n numbers into a max-heap (O(n log n) comparisons on ascending input, O(n) memory): keep "
            "a min-heap of only the k largest so far and replace its root when a larger number comes"),
    Mistake("scan of the k kept for the minimum", _scan_for_minimum,
            "finding the smallest of the k kept numbers by a scan costs k comparisons per number, O(n k): a "
            "min-heap keeps it at the root, and a replacement costs O(log k)"),
    Mistake("sorts everything", _merge_sort,
            "sorting all n numbers costs O(n log n) comparisons, more than the O(n log k) of a heap of size k: "
            "keep only k numbers in a min-heap"),
]


def _numbers(n, seed, lo=-10**6, hi=10**6):
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


def _top_k_cases():
    return [
        case(call, [3, 1, 4, 1, 5, 9, 2, 6], 3, note="small"),
        case(call, [5, 5, 4, 4, 3, 5], 3, note="duplicates: equal numbers count separately"),
        case(call, [-3, -1, -2, -7], 2, note="negatives"),
        case(call, [7, 2, 9], 0, note="k = 0: an empty list"),
        case(call, [7, 2, 9, 2], 4, note="k = len(nums): every number, in decreasing order"),
        case(call, [1.5, -0.5, 2.25, 2.25, -8.0], 2, note="floats with a tie"),
        case(call, [4, 4, 4, 4], 2, note="all equal"),
        case(call, [42], 1, note="a single number"),
        case(call, _numbers(500, 1), 10, note="500 random numbers, k = 10"),
        case(call, list(range(-2048, 2048)), 2, note="4,096 numbers in ascending order, k = 2"),
        case(call, _numbers(4096, 2), 1, note="4,096 random numbers, k = 1"),
        case(call, _numbers(4096, 3), 64, note="4,096 random numbers, k = 64"),
        case(call, list(range(4096)), 64, note="4,096 numbers in ascending order, k = 64: every number enters"),
    ]


TOP_K = CountingExercise(
    name="top_k_largest",
    chapter="warmups/warmups",
    signature="top_k_largest(nums, k)",
    oracle=top_k_spec,
    cases=_top_k_cases,
    budget=_comparison_budget,
    rule="4 (n log2(k+1) + k + 1)",
    forbidden=("torch.topk", "torch.sort", "torch.argsort", "Tensor.topk", "Tensor.sort"),
    timeout=3.0,
    hints=("keep only k numbers, in a min-heap: its root is the smallest of the k largest seen so far, the one a "
           "larger newcomer replaces   (eq. wu-heap)",
           "a heap is a list with the children of i at 2i+1 and 2i+2: push = append then sift up while smaller than "
           "the parent; replace the root = overwrite heap[0] then sift down toward the smaller child   "
           "(eq. wu-heap-cost)",
           "for x in nums: if len(heap) < k: push(x) elif x > heap[0]: heap[0] = x; sift_down(0). Then pop all k "
           "(swap the root with the last, pop, sift down) and reverse: decreasing order"),
    mistakes=TOP_K_MISTAKES,
)

# =========================================================================== edit_distance


def edit_distance_spec(a, b):
    """The whole (m+1) x (n+1) table of prefix distances, as the recurrence states it."""
    m, n = len(a), len(b)
    d = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m + 1):
        d[i][0] = i
    for j in range(n + 1):
        d[0][j] = j
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (0 if a[i - 1] == b[j - 1] else 1))
    return d[m][n]


def _edit_rows(a, b, *, substitution=1, match=0, first_row=None):
    prev = first_row(len(b)) if first_row else list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            same = a[i - 1] == b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (match if same else substitution))
        prev = cur
    return prev[len(b)]


def _substitution_costs_2(a, b):
    return _edit_rows(a, b, substitution=2)


def _match_costs_1(a, b):
    return _edit_rows(a, b, match=1)


def _base_row_off_by_one(a, b):
    return _edit_rows(a, b, first_row=lambda n: list(range(1, n + 2)))


def _base_row_zeros(a, b):
    return _edit_rows(a, b, first_row=lambda n: [0] * (n + 1))


def _position_by_position(a, b):
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def _last_cell_off_by_one(a, b):
    m, n = len(a), len(b)
    d = [[i + j if i == 0 or j == 0 else 0 for j in range(n + 1)] for i in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[m - 1][n - 1]


EDIT_MISTAKES = [
    Mistake("substitution costs 2", _substitution_costs_2,
            "a substitution costs 1, not 2: with cost 2 (a deletion plus an insertion) you compute the indel "
            "distance len(a) + len(b) - 2 LCS, not Levenshtein's"),
    Mistake("equal characters cost 1", _match_costs_1,
            "two equal characters cost nothing: the diagonal adds (a[i-1] != b[j-1]), 0 when they match"),
    Mistake("base row off by one", _base_row_off_by_one,
            "the base row is the distance from the empty prefix of a to b[:j], which is j (j insertions): "
            "range(len(b) + 1), starting at 0"),
    Mistake("base row of zeros", _base_row_zeros,
            "the base row is not zeros: turning the empty string into b[:j] takes j insertions, so d[0][j] = j "
            "(and d[i][0] = i)"),
    Mistake("position by position", _position_by_position,
            "comparing the strings position by position misses insertions and deletions that shift the rest "
            "(\"abc\" -> \"xabc\" is 1): fill the table of prefix distances"),
    Mistake("answer read one cell early", _last_cell_off_by_one,
            "the answer is the last cell, d[len(a)][len(b)], the distance between the whole strings; d[m-1][n-1] "
            "drops the last character of each"),
]


def _text(n, alphabet, seed):
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def _edit_cases():
    pairs = [
        ("kitten", "sitting", "the classic example: 3"),
        ("", "abc", "empty a: insert everything"),
        ("abc", "", "empty b: delete everything"),
        ("", "", "both empty"),
        ("abc", "abc", "identical"),
        ("abc", "xabc", "one insertion in front shifts everything"),
        ("intention", "execution", "a textbook pair"),
        ("机器学习", "深度学习", "Chinese characters"),
        ("大语言模型", "语言模型大", "a rotation"),
        ("a" * 30, "b" * 20, "nothing in common: max(m, n)"),
        (_text(60, "ACGT", 1), _text(70, "ACGT", 2), "random DNA, 60 x 70"),
        (_text(200, "abcde", 3), _text(180, "abcde", 4),
         "200 x 180: the table is fast, plain recursion without memo runs out of time"),
    ]
    return [case(call, a, b, note=note) for a, b, note in pairs]


EDIT_DISTANCE = PlainExercise(
    name="edit_distance",
    chapter="warmups/warmups",
    signature="edit_distance(a, b)",
    oracle=edit_distance_spec,
    cases=_edit_cases,
    timeout=3.0,
    hints=("d[i][j], the distance between the prefixes a[:i] and b[:j], comes from three smaller prefixes: the last "
           "step deletes, inserts or substitutes (or keeps a match)   (eq. wu-edit)",
           "base row and column: d[0][j] = j, d[i][0] = i; fill row by row; the answer is d[len(a)][len(b)]; two "
           "rows suffice   (eq. wu-edit-base)",
           "d[i][j] = min(d[i-1][j] + 1, d[i][j-1] + 1, d[i-1][j-1] + (a[i-1] != b[j-1]))   (eq. wu-edit)"),
    mistakes=EDIT_MISTAKES,
)

# =========================================================================== min_window_substring


def min_window_spec(s, t):
    """From every start i, the first end j whose window s[i:j] holds t's counts (per-character prefix counts);
    the shortest such window, the leftmost among equals; "" when none (and when t is empty)."""
    if not t:
        return ""
    need = Counter(t)
    prefix = {c: [0] * (len(s) + 1) for c in need}
    for j, ch in enumerate(s):
        for c in need:
            prefix[c][j + 1] = prefix[c][j] + (ch == c)

    def covers(i, j):
        return all(prefix[c][j] - prefix[c][i] >= k for c, k in need.items())

    best, j = None, 0
    for i in range(len(s)):
        j = max(j, i)
        while j <= len(s) and not covers(i, j):
            j += 1
        if j > len(s):
            break
        if best is None or j - i < best[1] - best[0]:
            best = (i, j)
    return "" if best is None else s[best[0]:best[1]]


def _window(s, t, *, counts=True, strict=True, formed_on="==", keep_sliding=True, trim=0):
    """The sliding window as candidates write it; the keywords give the mistakes below."""
    if not s or not t:
        return ""
    need = Counter(t) if counts else Counter(set(t))
    have, formed, left, best = Counter(), 0, 0, None
    for right, ch in enumerate(s):
        have[ch] += 1
        if ch in need and (have[ch] == need[ch] if formed_on == "==" else have[ch] >= need[ch]):
            formed += 1
        while formed >= len(need):
            size = right - left + 1
            if best is None or (size < best[1] - best[0] if strict else size <= best[1] - best[0]):
                best = (left, right + 1 - trim)
            out = s[left]
            have[out] -= 1
            if out in need and have[out] < need[out]:
                formed -= 1
            left += 1
        if best is not None and not keep_sliding:
            break
    return "" if best is None else s[best[0]:best[1]]


def _ignores_multiplicity(s, t):
    return _window(s, t, counts=False)


def _last_of_the_shortest(s, t):
    return _window(s, t, strict=False)


def _formed_counted_again(s, t):
    return _window(s, t, formed_on=">=")


def _first_covering_window(s, t):
    return _window(s, t, keep_sliding=False)


def _one_short(s, t):
    return _window(s, t, trim=1)


def _none_when_missing(s, t):
    return _window(s, t) or None


WINDOW_MISTAKES = [
    Mistake("ignores multiplicity", _ignores_multiplicity,
            "t's characters count with multiplicity: for t = \"aab\" a window needs two a's (compare counts, not "
            "sets)"),
    Mistake("last of the shortest", _last_of_the_shortest,
            "among the shortest windows return the leftmost: replace the answer only by a strictly shorter window "
            "(<, not <=)"),
    Mistake("character counted as formed twice", _formed_counted_again,
            "`formed` goes up every time a count is >= what t needs, so one character is counted several times and "
            "the window looks complete too early: count it once, when its count reaches the need exactly (==)"),
    Mistake("first covering window", _first_covering_window,
            "the first window that covers t is not the shortest: keep moving the right end to the end of s, "
            "shrinking from the left each time, and keep the shortest"),
    Mistake("window one character short", _one_short,
            "your window drops its last character: with right the index of the last character the window is "
            "s[left:right + 1]"),
    Mistake("None when there is no window", _none_when_missing,
            "when no window exists, return the empty string \"\", not None"),
]


def _window_cases():
    triples = [
        ("ADOBECODEBANC", "ABC", "the classic example: BANC"),
        ("a", "a", "one character"),
        ("a", "aa", "t needs two a's: no window"),
        ("aa", "aa", "the whole string"),
        ("", "a", "empty s"),
        ("abc", "", "empty t: the empty string"),
        ("abcab", "ab", "two shortest windows: the leftmost"),
        ("baacbbaab", "aab", "multiplicity"),
        ("cabwefgewcwaefgcf", "cae", "a window found early, a shorter one later"),
        ("我爱北京天安门，北京是中国的首都", "北京首", "Chinese"),
        ("abc", "abcd", "t longer than s"),
        (_text(200, "abcdefg", 5), "gfedcbaag", "random, 200 characters"),
        (_text(10_000, "abcdefghij", 6), "jihgfedcbaaj",
         "10,000 characters: the sliding window is fast, a scan from every start runs out of time"),
    ]
    return [case(call, s, t, note=note) for s, t, note in triples]


MIN_WINDOW = PlainExercise(
    name="min_window_substring",
    chapter="warmups/warmups",
    signature="min_window_substring(s, t)",
    oracle=min_window_spec,
    cases=_window_cases,
    timeout=3.0,
    hints=("a window [left, right] of s: move right until the window holds t's counts, then move left while it "
           "still does; every complete window is a candidate   (eq. wu-window)",
           "keep need = Counter(t), the window's counts and `formed`, the number of distinct characters whose count "
           "has reached the need: formed == len(need) means the window covers t",
           "for right, ch in enumerate(s): add ch; while formed == len(need): keep s[left:right + 1] if strictly "
           "shorter; remove s[left]; left += 1. Return \"\" when nothing was kept"),
    mistakes=WINDOW_MISTAKES,
)

register(RAND10, TOP_K, EDIT_DISTANCE, MIN_WINDOW)
