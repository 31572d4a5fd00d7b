"""Part 11, classic machine learning: Lloyd's k-means and k-means++ seeding (chapter classic_ml/kmeans)."""

from __future__ import annotations

import math
from functools import partial

import torch

from ....i18n import msg
from ...compare import tensor_form
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64, randn
from ...kinds import SamplingMistake, StochasticExercise, close_to, draws
from ...registry import register

KMEANS_TOL = {f32: (1e-4, 1e-5), f64: (1e-9, 1e-11)}


# --------------------------------------------------------------------------- shared inputs

def blobs(n_per, centres, seed, dtype=f32, spread=0.5):
    """n_per points around each centre (a list of D-vectors), interleaved, from one seed."""
    centres = torch.tensor(centres, dtype=f64)                                  # (K, D)
    K, D = centres.shape
    noise = randn(n_per, K, D, seed=seed, dtype=f64, scale=spread)              # (n_per, K, D)
    return (centres[None] + noise).reshape(-1, D).to(dtype)                     # (n_per * K, D)


THREE = [[0.0, 0.0], [4.0, 0.5], [1.0, 4.0]]


def _km_args(points, init, max_iters=None, tol=None, positional=False, layout="contiguous"):
    x, c = points(), init()
    if layout == "transposed":
        x = x.T.contiguous().T
    if positional:
        return call(x, c, max_iters, tol)
    kwargs = {k: v for k, v in (("max_iters", max_iters), ("tol", tol)) if v is not None}
    return call(x, c, **kwargs)


def _rows(points, idx):
    return lambda: points()[list(idx)].clone()


def _tensor(values, dtype=f32):
    return lambda: torch.tensor(values, dtype=dtype)


TIES = [[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 1.0]]


# --------------------------------------------------------------------------- kmeans

def kmeans_oracle(x, init_centroids, max_iters=100, tol=0.0):
    """Lloyd's algorithm as a plain specification: argmin (first index on ties) of the squared distances, each
    non-empty cluster's mean, stop when no centroid moved by more than tol."""
    x = x.detach()
    centroids = init_centroids.detach().clone()
    K = centroids.shape[0]

    def assign(c):
        return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1).argmin(1)        # (N,)

    for _ in range(max_iters):
        labels = assign(centroids)
        new = centroids.clone()
        for j in range(K):
            members = x[labels == j]
            if len(members):
                new[j] = members.mean(0)
        moved = (new - centroids).norm(dim=1).max()
        centroids = new
        if moved <= tol:
            break
    return centroids, assign(centroids)


def _kmeans_cases():
    three = partial(blobs, 20, THREE, 1)
    three64 = partial(blobs, 15, [[0, 0, 0, 0, 0], [3, 3, 0, 0, 1], [0, 3, 3, 1, 0], [3, 0, 3, 0, 1]], 2, f64)
    big = partial(blobs, 5000, [[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]], 3, f32, 1.0)
    return [
        case(_km_args, three, _rows(three, (0, 1, 2)), note="three blobs, K=3, init on three points"),
        case(_km_args, three64, _rows(three64, (0, 5, 10, 17)), note="float64, D=5, K=4"),
        case(_km_args, three, _rows(three, (0, 3, 6)), max_iters=1, note="max_iters=1: a single round"),
        case(_km_args, three, _rows(three, (0, 3, 6)), max_iters=0,
             note="max_iters=0: the initial centroids, labels by them"),
        case(_km_args, three, _rows(three, (0, 3, 6)), tol=0.5, note="tol=0.5 stops early"),
        case(_km_args, three64, _rows(three64, (1, 2, 3)), 50, 0.2, positional=True,
             note="max_iters and tol passed positionally"),
        case(_km_args, three, _rows(three, (7,)), note="K=1: the mean of every point"),
        case(_km_args, _tensor([[0.5, -1.0, 2.0]]), _tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
             note="a single point, K=2: the other centroid stays"),
        case(_km_args, three, _rows(three, (0, 1, 2)), layout="transposed", note="non-contiguous (column-major) x"),
        case(_km_args, three, _tensor([[0.0, 0.0], [4.0, 0.5], [1.0, 4.0], [50.0, 50.0]]),
             note="an empty cluster: the far centroid gets no point and stays"),
        case(_km_args, _tensor(TIES), _tensor([[0.0, 0.5], [2.0, 0.5]]),
             note="exact ties: equidistant points go to the lower index"),
        case(_km_args, three, _tensor([[1.0, 1.0], [1.0, 1.0], [4.0, 0.0]]),
             note="two identical initial centroids: the second stays empty"),
        case(_km_args, partial(blobs, 10, THREE, 4, f64, 0.5), _rows(partial(blobs, 10, THREE, 4, f64, 0.5), (0, 1, 2)),
             max_iters=5, note="float64, max_iters=5"),
        case(_km_args, big, _rows(big, (0, 1, 2, 4)), max_iters=10,
             note="large: N=20000, K=4, 10 rounds (a loop over points runs out of time)"),
    ]


def _labels_are_nearest(call):
    x = blobs(12, THREE, 40, f64)
    centroids, labels = call(x, x[[0, 1, 2]].clone(), max_iters=3)
    nearest = torch.cdist(x, centroids).argmin(1)
    wrong = int((labels != nearest).sum())
    if wrong:
        return msg("{wrong} labels do not name the nearest of the returned centroids", wrong=wrong)
    return None


def _fixed_point(call):
    x = blobs(12, THREE, 41, f64)
    centroids, labels = call(x, x[[0, 1, 2]].clone())
    for j in range(centroids.shape[0]):
        members = x[labels == j]
        if len(members) and float((members.mean(0) - centroids[j]).abs().max()) > 1e-9:
            return msg("after convergence (tol=0) centroid {j} is not the mean of its points", j=j)
    return None


def _nearest(x, c):
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)                      # (N, K)


def _means(x, labels, centroids, empty="stay"):
    K = centroids.shape[0]
    sums = torch.zeros_like(centroids).index_add_(0, labels, x)                # (K, D)
    counts = torch.bincount(labels, minlength=K).to(x.dtype)[:, None]          # (K, 1)
    if empty == "nan":
        return sums / counts
    if empty == "zero":
        return sums / counts.clamp(min=1)
    return torch.where(counts > 0, sums / counts.clamp(min=1), centroids)


def _lloyd(x, init_centroids, max_iters=100, tol=0.0, *, empty="stay", stale=False, use_tol=True,
           distance=_nearest, ties="first", in_place=False, limit=True):
    centroids = init_centroids if in_place else init_centroids.clone()

    def assign(c):
        d = distance(x, c)                                                     # (N, K)
        return d.argmin(1) if ties == "first" else d.shape[1] - 1 - d.flip(1).argmin(1)

    labels, rounds = assign(centroids), 0
    while rounds < max_iters or not limit:
        labels = assign(centroids)
        new = _means(x, labels, centroids, empty)
        moved = (new - centroids).norm(dim=1).max()
        if in_place:
            centroids.copy_(new)
        else:
            centroids = new
        rounds += 1
        if (moved <= tol if use_tol else moved == 0) or rounds >= 10_000:
            break
    return centroids, (labels if stale else assign(centroids))


def kmeans_stale_labels(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol, stale=True)


def kmeans_empty_nan(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol, empty="nan")


def kmeans_empty_zero(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol, empty="zero")


def kmeans_ignores_tol(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol, use_tol=False)


def kmeans_ignores_max_iters(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol, limit=False)


def kmeans_last_on_ties(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol, ties="last")


def kmeans_in_place(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol, in_place=True)


def kmeans_manhattan(x, init_centroids, max_iters=100, tol=0.0):
    return _lloyd(x, init_centroids, max_iters, tol,
                  distance=lambda x, c: (x[:, None, :] - c[None, :, :]).abs().sum(-1))


register(Exercise(
    name="kmeans",
    chapter="classic_ml/kmeans",
    signature="kmeans(x, init_centroids, max_iters=100, tol=0.0)",
    oracle=kmeans_oracle,
    cases=_kmeans_cases,
    tolerance=KMEANS_TOL,
    properties=[
        Property("every label names the nearest returned centroid", _labels_are_nearest),
        Property("at convergence each centroid is the mean of its points", _fixed_point),
    ],
    hints=("alternate two steps: assign every point to its nearest centroid, then move every centroid to the mean of "
           "its points; stop when no centroid moved by more than tol   (eq. km-assign, km-update)",
           "one (N, K) matrix of squared distances gives every assignment at once (argmin takes the first index on "
           "ties); index_add_ and bincount give every cluster's sum and count; a cluster with count 0 keeps its "
           "centroid",
           "for _ in range(max_iters): labels = d2(x, c).argmin(1); new = where(count > 0, sums / count, c); "
           "moved = (new - c).norm(dim=1).max(); c = new; if moved <= tol: break. Then labels = d2(x, c).argmin(1)"),
    mistakes=[
        Mistake("stale labels", kmeans_stale_labels,
                "your labels are those of the centroids before the last update: assign the points once more to the "
                "final centroids before returning"),
        Mistake("empty cluster gives NaN", kmeans_empty_nan,
                "a cluster with no points became NaN (its mean is 0/0): keep such a centroid where it is"),
        Mistake("empty cluster goes to 0", kmeans_empty_zero,
                "a cluster with no points moved to the origin (sum / max(count, 1) = 0): keep such a centroid where "
                "it is"),
        Mistake("tol ignored", kmeans_ignores_tol,
                "your loop ignores tol: stop as soon as no centroid moved by more than tol (the largest Euclidean "
                "distance between old and new centroids)"),
        Mistake("max_iters ignored", kmeans_ignores_max_iters,
                "your loop runs until convergence whatever max_iters is: make at most max_iters rounds "
                "(max_iters=0 returns the initial centroids)"),
        Mistake("ties to the last index", kmeans_last_on_ties,
                "a point equidistant from two centroids went to the higher index: ties go to the lowest index "
                "(argmin does that; a loop needs a strict <)"),
        Mistake("init_centroids edited in place", kmeans_in_place,
                "you changed the caller's init_centroids in place: clone them before updating"),
        Mistake("Manhattan distance", kmeans_manhattan,
                "your distance is the sum of absolute differences: k-means assigns by squared Euclidean distance, "
                "the distance whose minimiser is the mean"),
    ],
    bench=(lambda: call(blobs(2000, THREE, 0), blobs(1, THREE, 1)), kmeans_oracle),
))


# --------------------------------------------------------------------------- kmeans_plus_plus (stochastic)

def kmeanspp_law(x, k, *, power=2, nearest="all", first="uniform"):
    """Per centroid position: the exact probability of each row of x (then 'not a row of x': 0), by summing
    over every ordered choice. The keyword-only flags give mistakes' laws (power 1, distance to the last
    centroid only, first centroid x[0], farthest point)."""
    N = x.shape[0]
    d2 = torch.cdist(x.double(), x.double()).pow(2).tolist()
    law = [[0.0] * (N + 1) for _ in range(k)]

    def weights(chosen):
        ref = chosen[-1:] if nearest == "last" else chosen
        d = [min(d2[i][c] for c in ref) for i in range(N)]
        if power == "farthest":
            best = max(range(N), key=lambda i: (d[i], -i))
            return [float(i == best) for i in range(N)]
        return [v ** (power / 2) for v in d]

    def walk(chosen, prob):
        law[len(chosen) - 1][chosen[-1]] += prob
        if len(chosen) == k:
            return
        w = weights(chosen)
        total = math.fsum(w)
        for i in range(N):
            if w[i] > 0:
                walk(chosen + [i], prob * w[i] / total)

    for i in range(N):
        if first == "uniform":
            walk([i], 1.0 / N)
        elif i == 0:
            walk([0], 1.0)
    return torch.tensor(law, dtype=torch.float64)


def kmeanspp_observe(result, args, kwargs):
    """The row of x each returned centroid is (N: none)."""
    x, k = args[0], args[1]
    problem = tensor_form(torch.empty(k, x.shape[1], dtype=x.dtype), result)
    if problem:
        return problem
    r = result.detach()
    hit = (r[:, None, :] == x[None, :, :]).all(-1)                           # (k, N): x[i] returned as is
    if not hit.any(-1).all():
        hit = close_to(r[:, None, :], x[None, :, :]).all(-1)
    return torch.where(hit.any(-1), hit.float().argmax(-1), torch.full((k,), x.shape[0]))


def kmeanspp_names(args, kwargs):
    return [f"x[{i}]" for i in range(args[0].shape[0])] + [msg("not a row of x")]


def kmeanspp_unsquared(x, k, generator=None):
    idx = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    for _ in range(1, k):
        d = torch.cdist(x, x[idx]).min(-1).values
        idx.append(int(torch.multinomial(d, 1, generator=generator)))
    return x[idx].clone()


def kmeanspp_farthest(x, k, generator=None):
    idx = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    for _ in range(1, k):
        idx.append(int(torch.cdist(x, x[idx]).min(-1).values.argmax()))
    return x[idx].clone()


def kmeanspp_last_only(x, k, generator=None):
    idx = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    for _ in range(1, k):
        d2 = ((x - x[idx[-1]]) ** 2).sum(-1)          # forgets the earlier centroids
        idx.append(int(torch.multinomial(d2, 1, generator=generator)))
    return x[idx].clone()


def kmeanspp_first_row(x, k, generator=None):
    idx = [0]
    for _ in range(1, k):
        d2 = torch.cdist(x, x[idx]).pow(2).min(-1).values
        idx.append(int(torch.multinomial(d2, 1, generator=generator)))
    return x[idx].clone()


def kmeanspp_global_rng(x, k, generator=None):
    idx = [int(torch.randint(x.shape[0], (1,)))]
    for _ in range(1, k):
        d2 = torch.cdist(x, x[idx]).pow(2).min(-1).values
        idx.append(int(torch.multinomial(d2, 1)))
    return x[idx].clone()


CLUSTERS = [[0.0, 0.0], [1.0, 0.2], [0.3, 1.1], [6.0, 5.0], [7.2, 5.5], [-4.0, 7.0]]
SPREAD = [[0.6 * t, 0.8 * t] for t in (0.0, 0.09, 0.22, 0.55, 0.64, 0.82, 7.57)]   # on a line: D vs D^2 apart


def _points(points, dtype=f32):
    return torch.tensor(points, dtype=dtype)


def _pp_args(points, k, dtype=f32, layout="contiguous"):
    x = _points(points, dtype)
    if layout == "transposed":
        x = x.T.contiguous().T
    return call(x, k)


def _kmeanspp_cases():
    return [
        draws(_pp_args, SPREAD, 3, seed=1, calls=500, note="seven points on a line, k=3"),
        draws(_pp_args, CLUSTERS, 2, f64, seed=2, calls=200, note="float64, two clusters and an outlier, k=2"),
        draws(_pp_args, CLUSTERS[:4], 1, seed=3, calls=200, note="k=1: one uniform draw"),
        draws(_pp_args, CLUSTERS[1:5], 4, seed=4, calls=120, note="k=N: every point, in a random order"),
        draws(_pp_args, CLUSTERS, 3, f32, "transposed", seed=6, calls=150, note="non-contiguous (column-major) x, k=3"),
        draws(_pp_args, CLUSTERS[3:4], 1, seed=5, calls=2, note="a single point"),
    ]


register(StochasticExercise(
    name="kmeans_plus_plus",
    chapter="classic_ml/kmeans",
    signature="kmeans_plus_plus(x, k, generator=None)",
    oracle=kmeanspp_law,
    cases=_kmeanspp_cases,
    observe=kmeanspp_observe,
    names=kmeanspp_names,
    independent=False,
    false_rejection=1e-7,
    samples=3_032,
    timeout=10.0,      # 500 calls in one case: generous, for a loaded machine
    hints=("the first centroid uniformly at random; every next one drawn with probability proportional to D(x)^2, the "
           "squared distance to the nearest centroid chosen so far   (eq. km-pp)",
           "keep a running minimum d2 = min(d2, squared distance to the newest centroid); torch.multinomial(d2, 1, "
           "generator=generator) normalises the weights for you; draw the first with torch.randint(N, (1,), "
           "generator=generator)",
           "idx = [randint(N)]; d2 = |x - x[idx[0]]|^2; repeat k - 1 times: i = multinomial(d2, 1); idx.append(i); "
           "d2 = min(d2, |x - x[i]|^2); return x[idx]   (eq. km-pp)"),
    mistakes=[
        SamplingMistake("distance, not squared", kmeanspp_unsquared,
                        "your code draws in proportion to the distance: k-means++ uses the squared distance D(x)^2",
                        law=partial(kmeanspp_law, power=1), passes=1e-9),
        SamplingMistake("farthest point", kmeanspp_farthest,
                        "your code takes the farthest point every time: draw it at random, with probability "
                        "proportional to D(x)^2", law=partial(kmeanspp_law, power="farthest"), passes=1e-12),
        SamplingMistake("distance to the last centroid only", kmeanspp_last_only,
                        "your distances only look at the newest centroid: D(x) is the distance to the nearest of "
                        "all the centroids chosen so far (keep a running minimum)",
                        law=partial(kmeanspp_law, nearest="last"), passes=1e-9),
        SamplingMistake("first centroid not uniform", kmeanspp_first_row,
                        "your first centroid is always x[0]: draw it uniformly at random with the generator",
                        law=partial(kmeanspp_law, first="row 0"), passes=1e-12),
        SamplingMistake("k-means++ ignores the generator", kmeanspp_global_rng,
                        "your draws come from the global RNG: pass generator=generator to torch.randint / "
                        "torch.multinomial", rng="global", passes=1e-12),
    ],
))
