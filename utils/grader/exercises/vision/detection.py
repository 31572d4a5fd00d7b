"""Part 12, vision: IoU, GIoU, DIoU, CIoU and NMS (chapter vision/detection).

torchvision has no build that loads against the pinned torch here, so every oracle is a plain specification of
torchvision.ops' functions of the same names (boxes.py and the CPU nms kernel): the same formulas, the same eps,
alpha under no_grad, a box suppressed when its IoU with a kept box is greater than the threshold. The tests check
them against hand-computed boxes and the formulas of Rezatofighi et al. 2019 and Zheng et al. 2020.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from ....i18n import msg
from ...core import Exercise, Mistake, Property
from ...inputs import call, case, f32, f64
from ...registry import register

# --------------------------------------------------------------------------- inputs

def random_boxes(n, seed, dtype=f32, scale=10.0, min_size=0.5):
    """n boxes (x1, y1, x2, y2) with positive width and height, corners in [0, scale)."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g, dtype=f64) * scale
    size = min_size + torch.rand(n, 2, generator=g, dtype=f64) * scale / 2
    return torch.cat([corner, corner + size], dim=1).to(dtype)                 # (n, 4)


def _tensor(values, dtype=f32):
    return lambda: torch.tensor(values, dtype=dtype).reshape(-1, 4)


def _pair_args(first, second, layout="contiguous", **kw):
    a, b = first(), second()
    if layout == "transposed":                  # (N, 4) views of (4, N) storage
        a, b = a.T.contiguous().T, b.T.contiguous().T
    return call(a, b, **kw)


def _rb(n, seed, dtype=f32, **kw):
    return partial(random_boxes, n, seed, dtype, **kw)


HAND_A = [[0.0, 0.0, 2.0, 2.0]]
HAND_B = [[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 5.0, 2.0], [4.0, 4.0, 6.0, 7.0]]


def _iou_cases(eps_case=False):
    cases = [
        case(_pair_args, _rb(5, 1), _rb(7, 2), note="random boxes, N=5, M=7"),
        case(_pair_args, _rb(6, 3, f64), _rb(4, 4, f64), note="float64"),
        case(_pair_args, _rb(1, 5), _rb(4, 6), note="a single box against four"),
        case(_pair_args, _tensor(HAND_A), _tensor(HAND_B),
             note="hand-made: overlapping, identical, touching, far apart"),
        case(_pair_args, _tensor([[0, 0, 1, 1], [5, 5, 6, 8]]), _tensor([[3, 3, 4, 4], [0, 6, 1, 9]]),
             note="boxes apart along both axes (negative width and height of the overlap)"),
        case(_pair_args, _tensor([[0, 0, 4, 4], [1, 1, 2, 3]], f64), _tensor([[1, 1, 2, 3], [-1, -1, 5, 6]], f64),
             note="one box inside the other"),
        case(_pair_args, _tensor([[0, 0, 0, 3], [1, 1, 4, 1]]), _tensor([[-1, 0, 2, 2], [0, 0, 5, 5]]),
             note="degenerate boxes: zero width or zero height"),
        case(_pair_args, _rb(6, 7, scale=1000.0, min_size=50.0), _rb(5, 8, scale=1000.0, min_size=50.0),
             note="pixel coordinates up to 1000"),
        case(_pair_args, _rb(5, 9), _rb(6, 10), layout="transposed", note="non-contiguous boxes"),
        case(_pair_args, _tensor([], f32), _rb(3, 11), note="no boxes in the first set: a (0, 3) result"),
        case(_pair_args, _rb(4, 12, f64), _rb(3, 13, f64), grad=True, note="gradients"),
    ]
    if eps_case:
        cases.append(case(_pair_args, _rb(4, 14, f64), _rb(3, 15, f64), eps=0.5, note="eps=0.5 passed explicitly"))
    return cases


# --------------------------------------------------------------------------- the specification (torchvision.ops)

def _area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _inter_union(b1, b2):
    lt = torch.max(b1[:, None, :2], b2[None, :, :2])                           # (N, M, 2)
    rb = torch.min(b1[:, None, 2:], b2[None, :, 2:])                           # (N, M, 2)
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]                                            # (N, M)
    return inter, _area(b1)[:, None] + _area(b2)[None, :] - inter


def iou_spec(boxes1, boxes2):
    inter, union = _inter_union(boxes1, boxes2)
    return inter / union


def giou_spec(boxes1, boxes2):
    inter, union = _inter_union(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return inter / union - (enclosing - union) / enclosing


def _centre_term(boxes1, boxes2, eps):
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    diagonal_sq = wh[..., 0] ** 2 + wh[..., 1] ** 2 + eps
    c1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2
    c2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2
    centre_sq = ((c1[:, None, :] - c2[None, :, :]) ** 2).sum(-1)
    return centre_sq / diagonal_sq


def diou_spec(boxes1, boxes2, eps=1e-7):
    return iou_spec(boxes1, boxes2) - _centre_term(boxes1, boxes2, eps)


def _aspect_term(boxes1, boxes2):
    w1, h1 = boxes1[:, None, 2] - boxes1[:, None, 0], boxes1[:, None, 3] - boxes1[:, None, 1]
    w2, h2 = boxes2[:, 2] - boxes2[:, 0], boxes2[:, 3] - boxes2[:, 1]
    return 4 / math.pi ** 2 * (torch.atan(w1 / h1) - torch.atan(w2 / h2)) ** 2


def ciou_spec(boxes1, boxes2, eps=1e-7):
    iou = iou_spec(boxes1, boxes2)
    v = _aspect_term(boxes1, boxes2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - _centre_term(boxes1, boxes2, eps) - alpha * v


# --------------------------------------------------------------------------- box_iou

def _iou(b1, b2, *, plus_one=False, clamp="sides", subtract=True, swap=False):
    lo, hi = (torch.min, torch.max) if swap else (torch.max, torch.min)
    lt = lo(b1[:, None, :2], b2[None, :, :2])
    rb = hi(b1[:, None, 2:], b2[None, :, 2:])
    wh = rb - lt + int(plus_one)
    if clamp == "sides":
        wh = wh.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    if clamp == "product":
        inter = inter.clamp(min=0)
    one = int(plus_one)
    a1 = (b1[:, 2] - b1[:, 0] + one) * (b1[:, 3] - b1[:, 1] + one)
    a2 = (b2[:, 2] - b2[:, 0] + one) * (b2[:, 3] - b2[:, 1] + one)
    union = a1[:, None] + a2[None, :] - (inter if subtract else 0)
    return inter / union


def box_iou_plus_one(boxes1, boxes2):
    return _iou(boxes1, boxes2, plus_one=True)


def box_iou_union_keeps_intersection(boxes1, boxes2):
    return _iou(boxes1, boxes2, subtract=False)


def box_iou_no_clamp(boxes1, boxes2):
    return _iou(boxes1, boxes2, clamp="none")


def box_iou_clamps_the_product(boxes1, boxes2):
    return _iou(boxes1, boxes2, clamp="product")


def box_iou_min_max_swapped(boxes1, boxes2):
    return _iou(boxes1, boxes2, swap=True)


def box_iou_paired(boxes1, boxes2):
    n = min(len(boxes1), len(boxes2))
    return torch.diagonal(_iou(boxes1[:n], boxes2[:n]))


def _translation_invariant(fn_name):
    def check(call):
        b1, b2 = random_boxes(4, 40, f64), random_boxes(5, 41, f64)
        gap = float((call(b1 + 100.0, b2 + 100.0) - call(b1, b2)).abs().max())
        if gap > 1e-9:
            return msg("{fn} changes when every box moves by 100: off by {gap:.3g}", fn=fn_name, gap=gap)
        return None
    return check


def _self_is_one(fn_name, tol):
    def check(call):
        b = random_boxes(5, 42, f64)
        gap = float((torch.diagonal(call(b, b)) - 1).abs().max())
        if gap > tol:
            return msg("{fn} of a box with itself is not 1: off by {gap:.3g}", fn=fn_name, gap=gap)
        return None
    return check


def _symmetric(fn_name):
    def check(call):
        b1, b2 = random_boxes(4, 43, f64), random_boxes(6, 44, f64)
        gap = float((call(b1, b2) - call(b2, b1).T).abs().max())
        if gap > 1e-9:
            return msg("{fn}(a, b) is not {fn}(b, a) transposed: off by {gap:.3g}", fn=fn_name, gap=gap)
        return None
    return check


register(Exercise(
    name="box_iou",
    chapter="vision/detection",
    signature="box_iou(boxes1, boxes2)",
    oracle=iou_spec,
    cases=_iou_cases,
    properties=[Property("IoU is symmetric", _symmetric("box_iou")),
                Property("IoU of a box with itself is 1", _self_is_one("box_iou", 1e-12)),
                Property("IoU does not change when every box moves", _translation_invariant("box_iou"))],
    hints=("IoU = area of the intersection / area of the union, for every pair: broadcast (N, 1, 2) against "
           "(1, M, 2)   (eq. det-iou)",
           "the intersection runs from the larger top-left corner to the smaller bottom-right corner; a negative side "
           "means no overlap, so clamp each side at 0 before multiplying",
           "lt = max(b1[:, None, :2], b2[:, :2]); rb = min(b1[:, None, 2:], b2[:, 2:]); inter = (rb - lt).clamp(min=0)"
           ".prod(-1); union = area1[:, None] + area2 - inter   (eq. det-iou)"),
    mistakes=[
        Mistake("+1 in the areas", box_iou_plus_one,
                "you added 1 to every width and height (the old pixel convention, x2 - x1 + 1): torchvision's boxes "
                "are continuous, area = (x2 - x1) * (y2 - y1)"),
        Mistake("union keeps the intersection", box_iou_union_keeps_intersection,
                "your union counts the intersection twice: union = area1 + area2 - intersection"),
        Mistake("no clamp", box_iou_no_clamp,
                "boxes that do not overlap give a negative side of the intersection: clamp the width and the height "
                "at 0 (two negative sides multiply to a positive area)"),
        Mistake("clamp after the product", box_iou_clamps_the_product,
                "you clamped the intersection area, not its sides: boxes apart along both axes have two negative sides "
                "whose product is positive. Clamp width and height at 0 before multiplying"),
        Mistake("min and max swapped", box_iou_min_max_swapped,
                "your intersection is the enclosing box: its top-left corner is the max of the top-left corners and "
                "its bottom-right corner the min of the bottom-right corners"),
        Mistake("paired, not pairwise", box_iou_paired,
                "you computed the IoU of boxes1[i] with boxes2[i] only: return the (N, M) matrix of every pair "
                "(broadcast boxes1[:, None] against boxes2[None])"),
    ],
    bench=(lambda: call(random_boxes(1000, 0), random_boxes(1000, 1)), iou_spec),
))


# --------------------------------------------------------------------------- generalized_box_iou

def _enclosing(b1, b2):
    wh = torch.max(b1[:, None, 2:], b2[None, :, 2:]) - torch.min(b1[:, None, :2], b2[None, :, :2])
    return wh[..., 0] * wh[..., 1]


def giou_divides_by_union(boxes1, boxes2):
    inter, union = _inter_union(boxes1, boxes2)
    return inter / union - (_enclosing(boxes1, boxes2) - union) / union


def giou_intersection_box(boxes1, boxes2):
    inter, union = _inter_union(boxes1, boxes2)
    return inter / union - (inter - union) / inter.clamp(min=1e-12)


def giou_minus_intersection(boxes1, boxes2):
    inter, union = _inter_union(boxes1, boxes2)
    c = _enclosing(boxes1, boxes2)
    return inter / union - (c - inter) / c


def giou_union_keeps_intersection(boxes1, boxes2):
    inter, union = _inter_union(boxes1, boxes2)
    union = union + inter
    c = _enclosing(boxes1, boxes2)
    return inter / union - (c - union) / c


def giou_loss(boxes1, boxes2):
    return 1 - giou_spec(boxes1, boxes2)


def giou_plus_one(boxes1, boxes2):
    return giou_spec(boxes1, boxes2) - iou_spec(boxes1, boxes2) + _iou(boxes1, boxes2, plus_one=True)


def _giou_range(call):
    b1, b2 = random_boxes(6, 45, f64), random_boxes(7, 46, f64, scale=30.0)
    g, iou = call(b1, b2), iou_spec(b1, b2)
    if bool((g > iou + 1e-12).any()) or bool((g <= -1).any()):
        return msg("GIoU must lie in (-1, IoU]: got values from {lo:.3g} to {hi:.3g}", lo=float(g.min()),
                   hi=float(g.max()))
    return None


register(Exercise(
    name="generalized_box_iou",
    chapter="vision/detection",
    signature="generalized_box_iou(boxes1, boxes2)",
    oracle=giou_spec,
    cases=_iou_cases,
    properties=[Property("GIoU is symmetric", _symmetric("generalized_box_iou")),
                Property("-1 < GIoU <= IoU", _giou_range),
                Property("GIoU does not change when every box moves", _translation_invariant("generalized_box_iou"))],
    hints=("GIoU = IoU - |C minus (A union B)| / |C|, with C the smallest box enclosing both   (eq. det-giou)",
           "the enclosing box runs from the min of the top-left corners to the max of the bottom-right corners: its "
           "sides are never negative",
           "giou = iou - (area_C - union) / area_C, with the same union as in box_iou   (eq. det-giou)"),
    mistakes=[
        Mistake("divides by the union", giou_divides_by_union,
                "the penalty is divided by the enclosing area |C|, not by the union: (|C| - union) / |C|"),
        Mistake("intersection box for C", giou_intersection_box,
                "C is the smallest box enclosing both boxes (min of the top-left corners, max of the bottom-right "
                "ones), not their intersection"),
        Mistake("C minus the intersection", giou_minus_intersection,
                "the penalty is the part of C covered by neither box: (|C| - union) / |C|, not (|C| - intersection) / "
                "|C|"),
        Mistake("union keeps the intersection", giou_union_keeps_intersection,
                "your union counts the intersection twice: union = area1 + area2 - intersection"),
        Mistake("returned the loss", giou_loss,
                "you returned the GIoU loss 1 - GIoU: return GIoU itself (1 for identical boxes)"),
        Mistake("+1 in the areas", giou_plus_one,
                "you added 1 to widths and heights (the pixel convention): areas are (x2 - x1) * (y2 - y1)"),
    ],
    bench=(lambda: call(random_boxes(1000, 0), random_boxes(1000, 1)), giou_spec),
))


# --------------------------------------------------------------------------- distance_box_iou

def _centres(b):
    return (b[:, :2] + b[:, 2:]) / 2


def diou_distance_not_squared(boxes1, boxes2, eps=1e-7):
    rho = (_centres(boxes1)[:, None] - _centres(boxes2)[None]).norm(dim=-1)          # (N, M)
    wh = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:]) - torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    c = wh.norm(dim=-1) + eps
    return iou_spec(boxes1, boxes2) - rho / c


def diou_corners(boxes1, boxes2, eps=1e-7):
    c1, c2 = boxes1[:, :2], boxes2[:, :2]
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    diag = ((rb - lt) ** 2).sum(-1) + eps
    return iou_spec(boxes1, boxes2) - ((c1[:, None] - c2[None]) ** 2).sum(-1) / diag


def diou_target_diagonal(boxes1, boxes2, eps=1e-7):
    diag = ((boxes2[:, 2:] - boxes2[:, :2]) ** 2).sum(-1) + eps                 # (M,) the second box's own diagonal
    centre_sq = ((_centres(boxes1)[:, None] - _centres(boxes2)[None]) ** 2).sum(-1)
    return iou_spec(boxes1, boxes2) - centre_sq / diag[None, :]


def diou_no_eps(boxes1, boxes2, eps=1e-7):
    return diou_spec(boxes1, boxes2, 0.0)


def diou_loss(boxes1, boxes2, eps=1e-7):
    return 1 - diou_spec(boxes1, boxes2, eps)


def diou_plus_one(boxes1, boxes2, eps=1e-7):
    return diou_spec(boxes1, boxes2, eps) - iou_spec(boxes1, boxes2) + _iou(boxes1, boxes2, plus_one=True)


register(Exercise(
    name="distance_box_iou",
    chapter="vision/detection",
    signature="distance_box_iou(boxes1, boxes2, eps=1e-7)",
    oracle=diou_spec,
    cases=partial(_iou_cases, eps_case=True),
    properties=[Property("DIoU is symmetric", _symmetric("distance_box_iou")),
                Property("DIoU of a box with itself is 1", _self_is_one("distance_box_iou", 1e-12)),
                Property("DIoU does not change when every box moves", _translation_invariant("distance_box_iou"))],
    hints=("DIoU = IoU - rho^2 / c^2: rho the distance between the two centres, c the diagonal of the smallest box "
           "enclosing both   (eq. det-diou)",
           "centres are ((x1 + x2) / 2, (y1 + y2) / 2); the enclosing box's squared diagonal is w_C^2 + h_C^2, and "
           "eps is added to it (torchvision's convention)",
           "diou = iou - ((cx1 - cx2)^2 + (cy1 - cy2)^2) / (w_C^2 + h_C^2 + eps), every pair broadcast to (N, M)   "
           "(eq. det-diou)"),
    mistakes=[
        Mistake("distance not squared", diou_distance_not_squared,
                "the penalty uses the squared centre distance rho^2 over the squared diagonal c^2: both squared, so "
                "the ratio is scale-free"),
        Mistake("corners, not centres", diou_corners,
                "you measured the distance between the top-left corners: DIoU uses the centres ((x1 + x2) / 2, "
                "(y1 + y2) / 2)"),
        Mistake("the target's own diagonal", diou_target_diagonal,
                "c is the diagonal of the smallest box enclosing BOTH boxes, not the diagonal of one of them"),
        Mistake("eps ignored", diou_no_eps,
                "your code ignores eps: add it to the squared diagonal, c^2 + eps, as torchvision does"),
        Mistake("returned the loss", diou_loss,
                "you returned the DIoU loss 1 - DIoU: return DIoU itself"),
        Mistake("+1 in the areas", diou_plus_one,
                "you added 1 to widths and heights (the pixel convention): areas are (x2 - x1) * (y2 - y1)"),
    ],
    bench=(lambda: call(random_boxes(1000, 0), random_boxes(1000, 1)), diou_spec),
))


# --------------------------------------------------------------------------- complete_box_iou

def _ciou(boxes1, boxes2, eps=1e-7, *, alpha_grad=False, v_term=True, v_scale=4 / math.pi ** 2, alpha_one=False):
    iou = iou_spec(boxes1, boxes2)
    v = _aspect_term(boxes1, boxes2) / (4 / math.pi ** 2) * v_scale
    if alpha_one:
        alpha = torch.ones_like(v)
    elif alpha_grad:
        alpha = v / (1 - iou + v + eps)
    else:
        with torch.no_grad():
            alpha = v / (1 - iou + v + eps)
    return iou - _centre_term(boxes1, boxes2, eps) - (alpha * v if v_term else 0)


def ciou_alpha_with_grad(boxes1, boxes2, eps=1e-7):
    return _ciou(boxes1, boxes2, eps, alpha_grad=True)


def ciou_without_v(boxes1, boxes2, eps=1e-7):
    return _ciou(boxes1, boxes2, eps, v_term=False)


def ciou_no_four_over_pi_sq(boxes1, boxes2, eps=1e-7):
    return _ciou(boxes1, boxes2, eps, v_scale=1.0)


def ciou_alpha_one(boxes1, boxes2, eps=1e-7):
    return _ciou(boxes1, boxes2, eps, alpha_one=True)


def ciou_loss(boxes1, boxes2, eps=1e-7):
    return 1 - ciou_spec(boxes1, boxes2, eps)


def ciou_no_eps(boxes1, boxes2, eps=1e-7):
    return ciou_spec(boxes1, boxes2, 0.0)


def _ciou_below_diou(call):
    b1, b2 = random_boxes(5, 47, f64), random_boxes(6, 48, f64)
    gap = float((call(b1, b2) - diou_spec(b1, b2)).max())
    if gap > 1e-12:
        return msg("CIoU exceeds DIoU by {gap:.3g}: the aspect-ratio penalty alpha v is never negative", gap=gap)
    return None


def _ciou_scale_free(call):
    b1, b2 = random_boxes(4, 49, f64), random_boxes(5, 50, f64)
    gap = float((call(3.0 * b1, 3.0 * b2, eps=0.0) - call(b1, b2, eps=0.0)).abs().max())
    if gap > 1e-9:
        return msg("CIoU (eps=0) changes when every coordinate is multiplied by 3: off by {gap:.3g}", gap=gap)
    return None


register(Exercise(
    name="complete_box_iou",
    chapter="vision/detection",
    signature="complete_box_iou(boxes1, boxes2, eps=1e-7)",
    oracle=ciou_spec,
    cases=partial(_iou_cases, eps_case=True),
    properties=[Property("CIoU <= DIoU", _ciou_below_diou),
                Property("CIoU of a box with itself is 1", _self_is_one("complete_box_iou", 1e-12)),
                Property("CIoU does not change when every coordinate is scaled", _ciou_scale_free)],
    hints=("CIoU = DIoU - alpha v: v measures how different the aspect ratios are, alpha weighs it   (eq. det-ciou)",
           "v = 4 / pi^2 (atan(w1 / h1) - atan(w2 / h2))^2 and alpha = v / (1 - IoU + v + eps); alpha is a weight, "
           "not something to differentiate: compute it under torch.no_grad()",
           "ciou = iou - rho^2 / (c^2 + eps) - alpha * v, with alpha computed under no_grad   (eq. det-ciou)"),
    mistakes=[
        Mistake("alpha with gradient", ciou_alpha_with_grad,
                "the values are right but the gradients are not: alpha = v / (1 - IoU + v + eps) is a trade-off "
                "weight, treated as a constant (computed under torch.no_grad()), as torchvision does"),
        Mistake("no v term", ciou_without_v,
                "you returned DIoU: CIoU also subtracts alpha v, the aspect-ratio term"),
        Mistake("4 / pi^2 missing", ciou_no_four_over_pi_sq,
                "v = 4 / pi^2 (atan(w1 / h1) - atan(w2 / h2))^2: the factor 4 / pi^2 scales v into [0, 1]"),
        Mistake("alpha = 1", ciou_alpha_one,
                "you subtracted v without its weight: alpha = v / (1 - IoU + v + eps)"),
        Mistake("returned the loss", ciou_loss,
                "you returned the CIoU loss 1 - CIoU: return CIoU itself"),
        Mistake("eps ignored", ciou_no_eps,
                "your code ignores eps: it goes into c^2 + eps and into alpha's denominator 1 - IoU + v + eps"),
    ],
    bench=(lambda: call(random_boxes(1000, 0), random_boxes(1000, 1)), ciou_spec),
))


# --------------------------------------------------------------------------- nms

def _pairwise_iou(boxes):
    """IoU as torchvision's CPU kernel computes it: inter / (area_i + area_j - inter), NaN for two empty boxes."""
    return iou_spec(boxes, boxes)


def nms_spec(boxes, scores, iou_threshold):
    """Greedy NMS as a loop: visit the boxes by decreasing score (ties: lower index first), keep a box unless its IoU
    with a kept box is greater than the threshold."""
    boxes, scores = boxes.detach(), scores.detach()
    iou = _pairwise_iou(boxes)                                                 # (N, N)
    score_of = scores.tolist()
    order = sorted(range(len(score_of)), key=lambda i: (-score_of[i], i))
    keep = []
    for i in order:
        if not keep or not bool((iou[i, keep] > iou_threshold).any()):       # NaN (two empty boxes) never suppresses
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)


def _nms(boxes, scores, iou_threshold, *, strict=True, order="descending", against="kept", iou=_pairwise_iou,
         single_pass=False, by_index=False):
    overlap = iou(boxes)
    if order == "descending":
        visit = torch.sort(scores, descending=True, stable=True).indices.tolist()
    elif order == "ascending":
        visit = torch.sort(scores, stable=True).indices.tolist()
    else:
        visit = list(range(len(scores)))
    keep, seen = [], []
    for i in visit:
        pool = keep[:1] if single_pass else (keep if against == "kept" else seen)
        if pool:
            row = overlap[i, pool]
            hit = (row > iou_threshold) if strict else (row >= iou_threshold)
        if not pool or not bool(hit.any()):
            keep.append(i)
        seen.append(i)
    if by_index:
        keep = sorted(keep)
    return torch.tensor(keep, dtype=torch.int64)


def nms_greater_or_equal(boxes, scores, iou_threshold):
    return _nms(boxes, scores, iou_threshold, strict=False)


def nms_unsorted(boxes, scores, iou_threshold):
    return _nms(boxes, scores, iou_threshold, order="index")


def nms_ascending(boxes, scores, iou_threshold):
    return _nms(boxes, scores, iou_threshold, order="ascending")


def nms_suppressed_still_suppress(boxes, scores, iou_threshold):
    return _nms(boxes, scores, iou_threshold, against="seen")


def nms_single_pass(boxes, scores, iou_threshold):
    return _nms(boxes, scores, iou_threshold, single_pass=True)


def nms_sorted_by_index(boxes, scores, iou_threshold):
    return _nms(boxes, scores, iou_threshold, by_index=True)


def nms_plus_one(boxes, scores, iou_threshold):
    return _nms(boxes, scores, iou_threshold, iou=lambda b: _iou(b, b, plus_one=True))


def _vec(values, dtype=f32):
    return lambda: torch.tensor(values, dtype=dtype)


def _scores(n, seed, dtype=f32):
    return lambda: torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=f64).to(dtype)


def _clusters(seed, dtype=f32):
    """Three clusters of five jittered boxes each: heavy overlap inside a cluster, none between clusters."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[10.0, 10.0, 20.0, 25.0], [40.0, 12.0, 55.0, 20.0], [15.0, 40.0, 30.0, 60.0]], dtype=f64)
    jitter = torch.randn(5, 3, 4, generator=g, dtype=f64) * 1.5
    return lambda: (centres[None] + jitter).reshape(-1, 4).to(dtype)


def _nms_args(boxes, scores, iou_threshold, layout="contiguous"):
    b = boxes()
    if layout == "transposed":
        b = b.T.contiguous().T
    return call(b, scores(), iou_threshold)


CHAIN = [[0, 0, 4, 1], [2, 0, 6, 1], [4, 0, 8, 1]]       # neighbours overlap by 1/3, the ends not at all
HALF = [[0, 0, 3, 1], [1, 0, 4, 1]]                      # IoU exactly 2 / 4 = 0.5


def _nms_cases():
    return [
        case(_nms_args, _rb(20, 1, scale=20.0), _scores(20, 2), 0.5, note="20 random boxes, threshold 0.5"),
        case(_nms_args, _clusters(3), _scores(15, 4), 0.3, note="three clusters of five boxes, threshold 0.3"),
        case(_nms_args, _clusters(5, f64), _scores(15, 6, f64), 0.6, note="float64 clusters, threshold 0.6"),
        case(_nms_args, _tensor(CHAIN), _vec([0.9, 0.8, 0.7]), 0.3,
             note="a chain: box 1 is suppressed by box 0, and so cannot suppress box 2"),
        case(_nms_args, _tensor(HALF), _vec([0.9, 0.8]), 0.5,
             note="IoU exactly equal to the threshold 0.5: both kept"),
        case(_nms_args, _tensor(HALF, f64), _vec([0.8, 0.9], f64), 0.49,
             note="IoU 0.5 above the threshold 0.49: the lower score goes"),
        case(_nms_args, _tensor([[1, 1, 5, 5]] * 3), _vec([0.2, 0.7, 0.5]), 0.5,
             note="three identical boxes: only the best survives"),
        case(_nms_args, _tensor([[0, 0, 4, 4], [10, 10, 12, 12], [0, 0, 4, 4.2], [11, 10, 13, 12]]),
             _vec([0.5, 0.5, 0.5, 0.5]), 0.3, note="ties in score: the lower index first"),
        case(_nms_args, _tensor([[2, 2, 2, 6], [2, 2, 2, 6], [0, 0, 4, 4]]), _vec([0.9, 0.8, 0.7]), 0.1,
             note="degenerate zero-width boxes never suppress anything"),
        case(_nms_args, _rb(12, 7, scale=15.0), _scores(12, 8), 0.0, note="threshold 0: any overlap suppresses"),
        case(_nms_args, _rb(12, 9, scale=15.0), _scores(12, 10), 1.0, note="threshold 1: every box kept, by score"),
        case(_nms_args, _rb(1, 11), _scores(1, 12), 0.5, note="a single box"),
        case(_nms_args, _tensor([], f32), _vec([], f32), 0.5, note="no boxes: an empty int64 tensor"),
        case(_nms_args, _rb(15, 13, scale=20.0), _scores(15, 14), 0.4, layout="transposed",
             note="non-contiguous boxes"),
        case(_nms_args, _rb(400, 15, scale=200.0), _scores(400, 16), 0.5,
             note="400 boxes over a 200 x 200 image"),
    ]


def _kept_overlap_little(call):
    boxes, scores = _clusters(51)(), _scores(15, 52)()
    keep = call(boxes, scores, 0.3)
    iou = iou_spec(boxes[keep], boxes[keep]).fill_diagonal_(0)
    if len(keep) and float(iou.max()) > 0.3:
        return msg("two kept boxes overlap with IoU {iou:.3g} > 0.3", iou=float(iou.max()))
    return None


def _scores_decrease(call):
    boxes, scores = random_boxes(25, 53, scale=20.0), _scores(25, 54)()
    kept = scores[call(boxes, scores, 0.5)]
    if bool((kept[1:] > kept[:-1]).any()):
        return msg("the kept indices are not in decreasing score order: {scores}", scores=kept.tolist()[:6])
    return None


register(Exercise(
    name="nms",
    chapter="vision/detection",
    signature="nms(boxes, scores, iou_threshold)",
    oracle=nms_spec,
    cases=_nms_cases,
    properties=[Property("no two kept boxes overlap by more than the threshold", _kept_overlap_little),
                Property("kept boxes come in decreasing score order", _scores_decrease)],
    hints=("greedy: take the best remaining box, keep it, drop every remaining box whose IoU with it is greater than "
           "the threshold, repeat   (eq. det-nms)",
           "sort once by score, descending (a stable sort keeps ties in index order); compute the (N, N) IoU matrix "
           "once; only KEPT boxes suppress, and a box at exactly the threshold stays",
           "order = scores.argsort(descending=True, stable=True); iou = box_iou(boxes, boxes); suppressed = zeros(N, "
           "bool); for i in order: if not suppressed[i]: keep i; suppressed |= iou[i] > iou_threshold   (eq. det-nms)"),
    mistakes=[
        Mistake(">= instead of >", nms_greater_or_equal,
                "you suppressed boxes whose IoU equals the threshold: torchvision suppresses only IoU > iou_threshold"),
        Mistake("unsorted scores", nms_unsorted,
                "you visited the boxes in input order: sort by score, descending, so that the best box of each "
                "cluster is kept first"),
        Mistake("ascending scores", nms_ascending,
                "you sorted the scores in increasing order: the highest-scoring box must come first"),
        Mistake("suppressed boxes still suppress", nms_suppressed_still_suppress,
                "a box removed by a better one must not remove others: compare each box only with the boxes already "
                "KEPT"),
        Mistake("one pass against the top box", nms_single_pass,
                "you removed only the boxes overlapping the best box and kept the rest: repeat with the best remaining "
                "box until none is left"),
        Mistake("indices sorted by position", nms_sorted_by_index,
                "return the kept indices in decreasing score order (the order they were kept), not sorted by index"),
        Mistake("+1 in the areas", nms_plus_one,
                "your IoU adds 1 to widths and heights (the pixel convention): areas are (x2 - x1) * (y2 - y1)"),
    ],
    bench=(lambda: call(random_boxes(2000, 0, scale=500.0), torch.rand(2000), 0.5), nms_spec),
))
