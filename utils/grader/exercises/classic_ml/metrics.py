"""Part 11, classic machine learning: ROC AUC and F1 (chapter classic_ml/metrics).

roc_auc's oracle is the definition itself, P(score of a positive > score of a negative) + 1/2 P(tie), summed
counted value by value over the distinct scores (never pair by pair): a plain specification, not the sort-and-rank
solution. f1_score's oracle is a loop over the classes, counting TP, FP and FN (sklearn's `f1_score` with
`labels=range(num_classes)`, `zero_division=0`; tests/test_classic_ml_training.py checks both against sklearn).
"""

from __future__ import annotations

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64
from ...registry import register

# --------------------------------------------------------------------------- roc_auc: the oracle


def _counts(scores, labels):
    """Distinct score values, ascending, with the number of positives and negatives at each."""
    values, where = torch.unique(scores.detach().double(), return_inverse=True)
    pos = labels.detach().reshape(-1) != 0
    where = where.reshape(-1)
    n_pos = torch.bincount(where[pos], minlength=len(values)).double()      # (U,)
    n_neg = torch.bincount(where[~pos], minlength=len(values)).double()     # (U,)
    return n_pos, n_neg


def _pairs(scores, labels, tie=0.5):
    """(positive above negative) + tie * (tied) pairs, counted value by value, and the number of pairs."""
    n_pos, n_neg = _counts(scores, labels)
    neg_below = torch.cumsum(n_neg, 0) - n_neg                              # negatives at a lower value
    won = (n_pos * (neg_below + tie * n_neg)).sum()
    return float(won), float(n_pos.sum() * n_neg.sum())


def roc_auc_spec(scores, labels):
    won, total = _pairs(scores, labels)
    return won / total


# --------------------------------------------------------------------------- roc_auc: mistakes

def auc_ties_lost(scores, labels):
    won, total = _pairs(scores, labels, tie=0.0)
    return won / total


def auc_ties_won(scores, labels):
    won, total = _pairs(scores, labels, tie=1.0)
    return won / total


def _ordinal_ranks(scores):
    order = torch.argsort(scores, stable=True)
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return ranks


def auc_ordinal_ranks(scores, labels):
    pos = labels != 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    r = _ordinal_ranks(scores)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_rank_sum_unshifted(scores, labels):
    pos = labels != 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    r = _ordinal_ranks(scores)
    return float(r[pos].sum() / (n_pos * n_neg))


def auc_reversed(scores, labels):
    return 1.0 - roc_auc_spec(scores, labels)


def auc_all_pairs(scores, labels):
    won, _ = _pairs(scores, labels)
    N = len(scores)
    return won / (N * (N - 1) / 2)


def auc_accuracy(scores, labels):
    return float(((scores > 0.5) == (labels != 0)).double().mean())


# --------------------------------------------------------------------------- roc_auc: cases

def _scores(N, seed, dtype=f32, levels=None, pos_rate=0.4, shift=0.8, strided=False, labels_as="long"):
    """Scores with positives shifted up by `shift` (AUC far from 0.5), rounded to `levels` values when given."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(N, generator=g) < pos_rate
    labels[0], labels[-1] = True, False                              # both classes
    s = torch.randn(N * (2 if strided else 1), generator=g, dtype=torch.float64)
    s = s[::2].clone() if strided else s
    s = s + shift * labels
    if levels is not None:
        s = torch.round(s * levels) / levels                         # ties
    s = s.to(dtype)
    if strided:
        s = torch.stack([s, torch.zeros_like(s)], 1)[:, 0]           # a non-contiguous view
    lab = {"long": labels.long(), "bool": labels, "float": labels.to(dtype), "int32": labels.int()}[labels_as]
    return call(s, lab)


def _given(scores, labels, dtype=f32):
    return call(torch.tensor(scores, dtype=dtype), torch.tensor(labels))


def _sigmoid_scores(N, seed):
    (s, lab), _ = _scores(N, seed, f32)
    return call(torch.sigmoid(2 * s), lab)


def auc_cases():
    return [
        case(_given, [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], note="four scores (sklearn's example: 0.75)"),
        case(_scores, 40, 1, note="40 distinct float32 scores, int64 labels"),
        case(_scores, 60, 2, f64, note="float64 scores"),
        case(_scores, 50, 3, levels=2, note="ties: scores rounded to halves"),
        case(_given, [0.3, 0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0, 0], note="every score tied: 0.5"),
        case(_given, [0.5, 0.7, 0.5, 0.2, 0.7, 0.5, 0.9], [1, 0, 0, 1, 1, 0, 1],
             note="ties across the classes"),
        case(_given, [2.0, 1.0], [1, 0], note="one positive and one negative (batch of one pair)"),
        case(_given, [0.9, 0.8, 0.3, 0.1], [0, 0, 1, 1], note="perfectly wrong: 0.0"),
        case(_given, [-3.0, 5.0, -1.0, 0.0], [0, 1, 0, 1], note="logits, not probabilities: perfect ranking"),
        case(_scores, 64, 4, strided=True, note="non-contiguous scores"),
        case(_scores, 48, 5, levels=4, labels_as="bool", note="bool labels, ties"),
        case(_scores, 45, 6, f64, levels=3, labels_as="float", note="float labels 0.0 / 1.0, ties"),
        case(_scores, 30, 7, pos_rate=0.05, note="one positive among many negatives"),
        case(_sigmoid_scores, 80, 8, note="probabilities in (0, 1)"),
        case(_scores, 200_000, 9, levels=300, shift=0.5,
             note="200,000 scores with ties: O(N log N) within the time limit, not a double loop"),
    ]


# --------------------------------------------------------------------------- roc_auc: properties

def _invariant_to_monotone_maps(call_):
    (s, lab), _ = _scores(200, 20, f64, levels=5)
    a, b = call_(s, lab), call_(torch.exp(3 * s) - 7.0, lab)
    if abs(float(a) - float(b)) > 1e-9:
        return msg("roc_auc(exp(3 s) - 7) = {b:.6f} but roc_auc(s) = {a:.6f}: AUC depends only on the order",
                   a=float(a), b=float(b))
    return None


def _symmetric(call_):
    (s, lab), _ = _scores(150, 21, f64, levels=6)
    a, b = call_(s, lab), call_(-s, 1 - lab)
    if abs(float(a) - float(b)) > 1e-9:
        return msg("negating the scores and swapping the classes changes the AUC from {a:.6f} to {b:.6f}",
                   a=float(a), b=float(b))
    return None


register(Exercise(
    name="roc_auc",
    chapter="classic_ml/metrics",
    signature="roc_auc(scores, labels) -> float",
    oracle=roc_auc_spec,
    cases=auc_cases,
    tolerance={float: (1e-6, 1e-9)},
    timeout=3.0,      # a sort of 200,000 scores takes ~0.1 s; the double loop takes hours
    properties=[Property("AUC is unchanged by a monotone map of the scores", _invariant_to_monotone_maps),
                Property("AUC(s, y) = AUC(-s, 1 - y)", _symmetric)],
    hints=("AUC is the fraction of (positive, negative) pairs ranked the right way, a tie counting one half, "
           "eq. (auc-pairs); counting the pairs one by one is O(N^2): sort once instead   (eq. auc-rank)",
           "sort the scores and give tied scores the average of their ranks; then the rank of a positive, minus "
           "the ranks of the positives below it, counts the negatives below it   (eq. auc-rank)",
           "AUC = (sum of the positives' average ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg), ranks from 1; "
           "average ranks: torch.unique(scores, return_inverse=True, return_counts=True), cumsum of the counts"),
    mistakes=[
        Mistake("ties counted as lost", auc_ties_lost,
                "your AUC counts a tied (positive, negative) pair as 0: a tie counts one half (average the ranks "
                "of tied scores, or add 0.5 per tied pair)"),
        Mistake("ties counted as won", auc_ties_won,
                "your AUC counts a tied (positive, negative) pair as 1 (>= instead of >): a tie counts one half"),
        Mistake("ranks of tied scores not averaged", auc_ordinal_ranks,
                "your ranks come from argsort, so tied scores get different ranks in whatever order the sort "
                "left them: give every tied score the average of their ranks"),
        Mistake("rank sum not shifted", auc_rank_sum_unshifted,
                "subtract n_pos (n_pos + 1) / 2 from the positives' rank sum: that is the rank sum the positives "
                "would have if every one of them were below every negative (and average the ranks of ties)"),
        Mistake("classes swapped", auc_reversed,
                "your result is 1 - AUC: you count the pairs where the negative scores higher; AUC is the "
                "probability that the positive scores higher"),
        Mistake("divided by all pairs", auc_all_pairs,
                "divide by the number of (positive, negative) pairs, n_pos * n_neg, not by the number of all "
                "pairs of samples"),
        Mistake("accuracy at 0.5", auc_accuracy,
                "this is the accuracy at the threshold 0.5, not the AUC: AUC ranks the scores against each other "
                "and needs no threshold"),
    ],
))


# --------------------------------------------------------------------------- f1_score: the oracle

def _per_class(pred, target, num_classes):
    """(tp, fp, fn) per class, a loop over the classes."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    rows = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        rows.append((int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())))
    return rows


def _f1(tp, fp, fn):
    return 0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_score_spec(pred, target, num_classes, average="macro"):
    rows = _per_class(pred, target, num_classes)
    if average == "micro":
        return _f1(*(sum(col) for col in zip(*rows)))
    if average != "macro":
        raise ValueError(f"average must be 'macro' or 'micro', not {average!r}")
    return sum(_f1(*r) for r in rows) / num_classes


# --------------------------------------------------------------------------- f1_score: mistakes

def f1_skips_absent(pred, target, num_classes, average="macro"):
    rows = _per_class(pred, target, num_classes)
    if average == "micro":
        return _f1(*(sum(col) for col in zip(*rows)))
    seen = [r for r in rows if sum(r) > 0]
    return sum(_f1(*r) for r in seen) / len(seen)


def _pr(tp, fp, fn):
    return (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)


def f1_arithmetic_mean(pred, target, num_classes, average="macro"):
    rows = _per_class(pred, target, num_classes)
    if average == "micro":
        rows = [tuple(sum(col) for col in zip(*rows))]
    return sum(sum(_pr(*r)) / 2 for r in rows) / len(rows)


def f1_of_macro_pr(pred, target, num_classes, average="macro"):
    rows = _per_class(pred, target, num_classes)
    if average == "micro":
        return _f1(*(sum(col) for col in zip(*rows)))
    P = sum(_pr(*r)[0] for r in rows) / num_classes
    R = sum(_pr(*r)[1] for r in rows) / num_classes
    return 0.0 if P + R == 0 else 2 * P * R / (P + R)


def f1_weighted(pred, target, num_classes, average="macro"):
    rows = _per_class(pred, target, num_classes)
    if average == "micro":
        return _f1(*(sum(col) for col in zip(*rows)))
    support = [tp + fn for tp, fp, fn in rows]
    return sum(s * _f1(*r) for s, r in zip(support, rows)) / sum(support)


def f1_nan_for_empty(pred, target, num_classes, average="macro"):
    rows = _per_class(pred, target, num_classes)
    if average == "micro":
        rows = [tuple(sum(col) for col in zip(*rows))]
    out = []
    for tp, fp, fn in rows:
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        out.append(float("nan") if p != p or r != r else (0.0 if p + r == 0 else 2 * p * r / (p + r)))
    return sum(out) / len(out)


def f1_micro_as_macro(pred, target, num_classes, average="macro"):
    return f1_score_spec(pred, target, num_classes, "macro")


def f1_macro_as_micro(pred, target, num_classes, average="macro"):
    return f1_score_spec(pred, target, num_classes, "micro")


# --------------------------------------------------------------------------- f1_score: cases

def _labels(N, C, seed, right=0.6, dtype=torch.int64, absent=(), never_predicted=(), strided=False, **kw):
    g = torch.Generator().manual_seed(seed)
    classes = [c for c in range(C) if c not in absent]
    target = torch.tensor(classes)[torch.randint(len(classes), (N,), generator=g)]
    noise = torch.tensor(classes)[torch.randint(len(classes), (N,), generator=g)]
    pred = torch.where(torch.rand(N, generator=g) < right, target, noise)
    for c in never_predicted:
        pred = torch.where(pred == c, (c + 1) % C, pred)
    pred, target = pred.to(dtype), target.to(dtype)
    if strided:
        pred = torch.stack([pred, target], 1)[:, 0]
    return call(pred, target, C, **kw)


def _given_labels(pred, target, C, **kw):
    return call(torch.tensor(pred), torch.tensor(target), C, **kw)


def f1_cases():
    return [
        case(_given_labels, [0, 2, 1, 0, 0, 1], [0, 1, 2, 0, 1, 2], 3, note="sklearn's example (macro 0.2667)"),
        case(_given_labels, [0, 2, 1, 0, 0, 1], [0, 1, 2, 0, 1, 2], 3, average="micro", note="the same, micro"),
        case(_labels, 100, 4, 1, note="4 classes, 60% right, macro by default"),
        case(_labels, 100, 4, 1, average="micro", note="4 classes, micro"),
        case(_labels, 80, 5, 2, absent=(3,), note="a class in neither pred nor target: counts 0 in macro"),
        case(_labels, 80, 5, 3, never_predicted=(1,), note="a class never predicted"),
        case(_given_labels, [0, 2, 2, 0], [0, 0, 0, 0], 3, note="a class predicted but never true"),
        case(_labels, 90, 6, 4, right=0.3, absent=(0, 5), average="macro", note="two absent classes, 30% right"),
        case(_labels, 90, 6, 4, right=0.3, absent=(0, 5), average="micro", note="two absent classes, micro"),
        case(_labels, 50, 2, 5, note="binary: macro over both classes"),
        case(_given_labels, [1, 0, 2], [1, 0, 2], 3, note="every prediction right: 1.0"),
        case(_given_labels, [1], [1], 4, note="a single sample (batch of one)"),
        case(_labels, 70, 3, 6, dtype=torch.int32, note="int32 labels"),
        case(_labels, 64, 7, 7, strided=True, note="non-contiguous pred"),
        case(_labels, 120, 10, 8, right=0.8, never_predicted=(2,), absent=(9,), average="micro",
             note="10 classes, micro with an absent class"),
        case(_labels, 200, 3, 9, right=0.5, note="3 classes, half right, 200 samples"),
    ]


def _micro_is_accuracy(call_):
    (pred, target, C), _ = _labels(300, 6, 30, right=0.45)
    got, acc = call_(pred, target, C, average="micro"), float((pred == target).double().mean())
    if abs(float(got) - acc) > 1e-9:
        return msg("micro F1 of single-label predictions is the accuracy {acc:.6f}; got {got:.6f}", acc=acc,
                   got=float(got))
    return None


register(Exercise(
    name="f1_score",
    chapter="classic_ml/metrics",
    signature='f1_score(pred, target, num_classes, average="macro") -> float',
    oracle=f1_score_spec,
    cases=f1_cases,
    tolerance={float: (1e-9, 1e-12)},
    properties=[Property("micro F1 equals the accuracy", _micro_is_accuracy)],
    hints=("count TP, FP and FN per class first (eq. f1-counts); macro averages the per-class F1 over all "
           "num_classes classes, micro pools the counts of every class and takes one F1   (eq. "
           "f1-avg)",
           "F1 = 2 TP / (2 TP + FP + FN), which is the harmonic mean of precision and recall and is 0, not NaN, "
           "when a class has no true and no predicted sample; that class still counts in the macro mean",
           "tp = bincount(target[pred == target], minlength=C); fp = bincount(pred, minlength=C) - tp; fn = "
           "bincount(target, minlength=C) - tp; macro = mean(2tp / (2tp + fp + fn), 0 where 0/0); micro = the "
           "same with the sums"),
    mistakes=[
        Mistake("absent classes skipped", f1_skips_absent,
                "your macro F1 averages only over the classes that occur: a class with no true and no predicted "
                "sample counts as F1 = 0, and the mean is over all num_classes classes (sklearn's labels="
                "range(num_classes))"),
        Mistake("arithmetic mean of precision and recall", f1_arithmetic_mean,
                "F1 is the harmonic mean of precision and recall, 2PR / (P + R), not their arithmetic mean"),
        Mistake("F1 of the macro precision and recall", f1_of_macro_pr,
                "your macro F1 is the F1 of the averaged precision and recall: macro F1 averages the per-class "
                "F1 scores"),
        Mistake("weighted by support", f1_weighted,
                "your macro F1 weights each class by its number of true samples (that is average='weighted'): "
                "macro weights every class equally"),
        Mistake("NaN for an empty class", f1_nan_for_empty,
                "a class with no predicted (or no true) sample gives 0 / 0 = NaN in your precision or recall: "
                "count it as 0 (zero_division=0), or use F1 = 2 TP / (2 TP + FP + FN)"),
        Mistake("micro computed as macro", f1_micro_as_macro,
                "average='micro' pools TP, FP and FN over all classes before the F1 (for single-label data it "
                "equals the accuracy): your micro is the macro average"),
        Mistake("macro computed as micro", f1_macro_as_micro,
                "average='macro' is the unweighted mean of the per-class F1 scores: your macro pools the counts "
                "(that is micro)"),
    ],
))
