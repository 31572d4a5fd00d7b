"""Part 11, classic machine learning: the training loop, freezing, initialisation and dropout (chapter
classic_ml/training_loop).

train_one_epoch, evaluate and freeze_except are training-loop exercises (kinds.training): the reader's loop and a
reference loop written here as a plain specification run on identical copies of a model, data and optimizer.
dropout is stochastic (kinds.stochastic: the exact law of every entry); xavier_uniform_ and kaiming_normal_ fill
a weight in place from the global generator (kinds.init: the law of its entries, by a Kolmogorov-Smirnov test).
Each reference takes a keyword-only `flaw` that gives the registered mistakes' behaviour.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from ...compare import tensor_form
from ...core import Case, Mistake
from ...inputs import call, f32, f64, randn
from ...kinds import (
    InitExercise,
    Law,
    SamplingMistake,
    Setup,
    StochasticExercise,
    TrainingExercise,
    WatchedLoss,
    classification_data,
    close_to,
    draws,
    eager,
    probe,
)
from ...registry import register

# =========================================================================== train_one_epoch


def train_one_epoch_spec(model, loader, optimizer, loss_fn, *, flaw=None):
    """The contract: training mode; per batch zero_grad, forward, backward, step; the mean of the batch losses."""
    if flaw not in ("never_train", "eval_mode"):
        model.train()
    if flaw == "eval_mode":
        model.eval()
    total, count, samples, kept = 0.0, 0, 0, []
    for x, y in loader:
        if flaw not in ("no_zero_grad", "zero_grad_after_backward", "zero_grad_last"):
            optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        if flaw == "step_before_backward":
            optimizer.step()
        loss.backward()
        if flaw == "zero_grad_after_backward":
            optimizer.zero_grad()
        if flaw != "step_before_backward":
            optimizer.step()
        if flaw == "zero_grad_last":
            optimizer.zero_grad()
        if flaw in ("sum_tensors", "keep_graphs"):
            kept.append(loss)
        total += loss.item() * (len(x) if flaw == "weighted_by_batch_size" else 1)
        count += 1
        samples += len(x)
    if flaw == "sum_tensors":
        return sum(kept) / count
    if flaw == "keep_graphs":
        return torch.stack(kept).mean().item()
    if flaw == "sum_not_mean":
        return total
    return total / (samples if flaw == "weighted_by_batch_size" else count)


# torch.optim's step() imports torch._dynamo (about 3 s) on its first call; `eager` is the same optimizer
# without that wrapper, so that the first check in a fresh kernel stays within a second.
SGD, Adam = eager(torch.optim.SGD), eager(torch.optim.Adam)


def sgd(params):
    return SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def adam(params):
    return Adam(params, lr=0.01)


def _epoch(seed, optimizer, n=70, batch_size=16, loader=False, shuffle=False, mode="train", stale_grads=False,
           loss=None):
    model = probe(seed, mode=mode, stale_grads=stale_grads)
    data = classification_data(model, n, batch_size, seed + 1, loader=loader, shuffle=shuffle)
    return Setup(model, (data, optimizer(model.parameters()), WatchedLoss(loss)), seed=seed + 2)


def epoch_cases():
    return [
        Case(partial(_epoch, 0, sgd), "SGD with momentum, a list of batches"),
        Case(partial(_epoch, 1, adam, loader=True), "Adam, a DataLoader over a TensorDataset"),
        Case(partial(_epoch, 2, sgd, mode="eval"), "the model arrives in eval mode (as evaluate leaves it)"),
        Case(partial(_epoch, 3, adam, stale_grads=True), "gradients left in .grad by an earlier backward"),
        Case(partial(_epoch, 4, sgd, n=52, loader=True, shuffle=True), "a shuffled DataLoader, a last batch of 4"),
        Case(partial(_epoch, 5, adam, n=36, batch_size=8, loss=nn.CrossEntropyLoss(label_smoothing=0.1)),
             "label smoothing 0.1, batches of 8"),
    ]


T = train_one_epoch_spec
EPOCH_MISTAKES = [
    Mistake("no zero_grad", partial(T, flaw="no_zero_grad"),
            "call optimizer.zero_grad() at the start of every step: without it each backward adds its gradients "
            "to those of every earlier batch"),
    Mistake("steps without gradients", partial(T, flaw="step_before_backward"),
            "optimizer.step() saw no gradients, so the parameters never moved: the order is zero_grad(), forward, "
            "loss.backward(), optimizer.step() (a step before backward, or a zero_grad between backward and "
            "step, leaves the step nothing to use)"),
    Mistake("zero_grad at the end of the step", partial(T, flaw="zero_grad_last"),
            "zero the gradients at the start of each step: gradients already in .grad when the loop begins (an "
            "earlier backward left them) were added into your first step"),
    Mistake("never calls model.train()", partial(T, flaw="never_train"),
            "call model.train() before the loop: the model may arrive in eval mode (evaluate leaves it there), "
            "and then Dropout is off and BatchNorm uses its running statistics"),
    Mistake("trains in eval mode", partial(T, flaw="eval_mode"),
            "train_one_epoch runs the model in training mode: model.train(), not model.eval()"),
    Mistake("sums the loss tensors", partial(T, flaw="sum_tensors"),
            "`total += loss` keeps every batch's autograd graph alive and returns a tensor: accumulate "
            "loss.item(), a Python float"),
    Mistake("keeps the loss tensors", partial(T, flaw="keep_graphs"),
            "keeping the loss tensors (losses.append(loss)) keeps every batch's autograd graph alive until the "
            "epoch ends: keep loss.item() instead"),
    Mistake("returns the sum", partial(T, flaw="sum_not_mean"),
            "return the mean of the batch losses: divide the total by the number of batches"),
    Mistake("weights by batch size", partial(T, flaw="weighted_by_batch_size"),
            "the contract is the plain mean of the batch losses (every batch counts once, the short last one "
            "too), not the mean over samples"),
]

TRAIN_ONE_EPOCH = TrainingExercise(
    name="train_one_epoch",
    chapter="classic_ml/training_loop",
    signature="train_one_epoch(model, loader, optimizer, loss_fn)",
    oracle=train_one_epoch_spec,
    cases=epoch_cases,
    mistakes=EPOCH_MISTAKES,
    returns="the mean batch loss it returned",
    tolerance={torch.float64: (1e-6, 1e-7)},     # the returned float: a mean may be taken in float32
    hints=("one step is four calls in a fixed order (eq. tl-step): clear the old gradients, forward, backward, "
           "update; and the model must be in training mode first",
           "model.train(); per batch: optimizer.zero_grad(), loss = loss_fn(model(x), y), loss.backward(), "
           "optimizer.step(); keep loss.item() (a float), never the loss tensor",
           "model.train(); for x, y in loader: zero_grad, loss = loss_fn(model(x), y), backward, step, "
           "total += loss.item(); return total / number of batches   (eq. tl-step, tl-mean)"),
)


# =========================================================================== evaluate

def evaluate_spec(model, loader, *, flaw=None):
    """The contract: eval mode, no graph, the fraction of all samples whose argmax is the label."""
    if flaw != "train_mode":
        model.eval()
    correct, total, per_batch = 0, 0, []
    with torch.set_grad_enabled(flaw == "builds_a_graph"):
        for x, y in loader:
            hits = (model(x).argmax(dim=-1) == y).sum().item()
            correct += hits
            total += len(y)
            per_batch.append(hits / len(y))
    if flaw == "mean_of_batch_accuracies":
        return sum(per_batch) / len(per_batch)
    if flaw == "percentage":
        return 100.0 * correct / total
    if flaw == "count":
        return correct
    return correct / total


def _evaluation(seed, n=70, batch_size=16, loader=False, mode="train"):
    model = probe(seed, mode=mode)
    return Setup(model, (classification_data(model, n, batch_size, seed + 1, loader=loader),), seed=seed + 2)


def eval_cases():
    return [
        Case(partial(_evaluation, 10), "a list of batches, the model in train mode"),
        Case(partial(_evaluation, 11, loader=True), "a DataLoader, the last batch of 6"),
        Case(partial(_evaluation, 12, mode="eval"), "the model already in eval mode"),
        Case(partial(_evaluation, 13, n=42, batch_size=5), "batches of 5, the last of 2"),
        Case(partial(_evaluation, 14, n=40, batch_size=40, loader=True),
             "one batch holding every sample, a DataLoader"),
    ]


E = evaluate_spec
EVAL_MISTAKES = [
    Mistake("builds a graph", partial(E, flaw="builds_a_graph"),
            "evaluate under torch.no_grad() (or torch.inference_mode()): without it every forward records an "
            "autograd graph nobody will use"),
    Mistake("evaluates in train mode", partial(E, flaw="train_mode"),
            "call model.eval() first: in train mode Dropout drops units and BatchNorm normalises with the batch's "
            "statistics and updates its running ones"),
    Mistake("averages the batch accuracies", partial(E, flaw="mean_of_batch_accuracies"),
            "accuracy is correct predictions over all samples: a short last batch must not count as much as a "
            "full one"),
    Mistake("returns a percentage", partial(E, flaw="percentage"),
            "return the accuracy as a fraction in [0, 1], not a percentage"),
    Mistake("returns the count", partial(E, flaw="count"),
            "return the fraction of correct predictions (correct / total), not their number"),
]

EVALUATE = TrainingExercise(
    name="evaluate",
    chapter="classic_ml/training_loop",
    signature="evaluate(model, loader)",
    oracle=evaluate_spec,
    cases=eval_cases,
    mistakes=EVAL_MISTAKES,
    returns="the accuracy it returned",
    tolerance={torch.float64: (1e-6, 1e-7)},
    hints=("two switches before the loop (eq. tl-acc): the model's mode (Dropout, BatchNorm) and autograd's "
           "recording; then count over every sample, not per batch",
           "model.eval(); with torch.no_grad(): count (model(x).argmax(-1) == y) and the number of labels over "
           "every batch",
           "model.eval(); under torch.no_grad() sum (model(x).argmax(-1) == y) over every batch; return correct / "
           "total (a float in [0, 1]). Leaving the model in eval mode afterwards is fine: train_one_epoch calls "
           "model.train()   (eq. tl-acc)"),
)


# =========================================================================== freeze_except

class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.lora_A = nn.Parameter(torch.randn(2, d))
        self.lora_B = nn.Parameter(torch.randn(d, 2))
        self.norm = nn.LayerNorm(d)


class TinyLM(nn.Module):
    """A model with nested names (layers.0.lora_A) and a prefix trap ('head' vs 'lm_head')."""

    def __init__(self, d=4, vocab=7, n_layers=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n_layers))
        self.head = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)


def freeze_except_spec(model, trainable_prefixes, *, flaw=None):
    """The contract: freeze every parameter whose name starts with none of the prefixes; the others are left as
    they are; return the parameters that still require grad, in named_parameters() order."""
    prefixes = list(trainable_prefixes)[:1] if flaw == "first_prefix_only" else list(trainable_prefixes)

    def trainable(name):
        return any((p in name) if flaw == "substring" else name.startswith(p) for p in prefixes)

    for name, p in model.named_parameters():
        if flaw == "sets_matching_trainable":
            p.requires_grad_(trainable(name))
        elif flaw == "freezes_the_matching":
            if trainable(name):
                p.requires_grad_(False)
        elif not trainable(name):
            p.requires_grad_(False)
    if flaw == "returns_all":
        return list(model.parameters())
    if flaw == "returns_names":
        return [n for n, p in model.named_parameters() if p.requires_grad]
    if flaw == "prefix_order":
        return [p for pre in prefixes for n, p in model.named_parameters() if n.startswith(pre) and p.requires_grad]
    return [p for p in model.parameters() if p.requires_grad]


def _tiny(seed, prefixes, frozen=()):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyLM()
    for name, p in model.named_parameters():
        if name.startswith(tuple(frozen)):
            p.requires_grad_(False)
    return Setup(model, (prefixes,))


def freeze_cases():
    return [
        Case(partial(_tiny, 20, ["head"]), "one prefix, a list"),
        Case(partial(_tiny, 21, ("layers.2.", "embed")), "two prefixes out of model order, a tuple"),
        Case(partial(_tiny, 22, ["layers.0.lora", "layers.1.lora", "layers.2.lora"]), "LoRA adapters only"),
        Case(partial(_tiny, 23, ["embed", "head"], frozen=("embed",)),
             "a matching parameter already frozen stays frozen"),
        Case(partial(_tiny, 24, []), "no prefix: everything frozen"),
        Case(partial(_tiny, 25, ("",), frozen=("lm_head",)), "the empty prefix matches every name"),
    ]


Z = freeze_except_spec
FREEZE_MISTAKES = [
    Mistake("freezes the matching parameters", partial(Z, flaw="freezes_the_matching"),
            "you froze the parameters that match a prefix: the prefixes name what stays trainable, so set "
            "requires_grad = False on every other parameter"),
    Mistake("unfreezes matching parameters", partial(Z, flaw="sets_matching_trainable"),
            "leave the parameters that match a prefix as they are: one frozen before stays frozen (set "
            "requires_grad = False only on the others)"),
    Mistake("matches anywhere in the name", partial(Z, flaw="substring"),
            "a parameter is trainable when its name starts with a prefix (name.startswith(prefix)): 'head' is a "
            "prefix of 'head.weight', not of 'lm_head.weight'"),
    Mistake("returns every parameter", partial(Z, flaw="returns_all"),
            "return only the parameters that still require grad (what the optimizer should get)"),
    Mistake("returns names", partial(Z, flaw="returns_names"),
            "return the nn.Parameter objects themselves (for the optimizer), not their names"),
    Mistake("uses the first prefix only", partial(Z, flaw="first_prefix_only"),
            "a parameter stays trainable when its name starts with any of the prefixes"),
    Mistake("orders by prefix", partial(Z, flaw="prefix_order"),
            "return the parameters in named_parameters() order, not grouped prefix by prefix"),
]

FREEZE_EXCEPT = TrainingExercise(
    name="freeze_except",
    chapter="classic_ml/training_loop",
    signature="freeze_except(model, trainable_prefixes)",
    oracle=freeze_except_spec,
    cases=freeze_cases,
    mistakes=FREEZE_MISTAKES,
    returns="the parameters it returned (by name, in order)",
    returns_parameters=True,
    hints=("a frozen parameter is one with requires_grad = False (eq. tl-freeze): autograd leaves its .grad None "
           "and the optimizer never sees it; walk model.named_parameters() and decide by the name",
           "a name is trainable when name.startswith(prefix) for some prefix (str.startswith takes a tuple); "
           "freeze the others and leave the matching ones as they are",
           "for name, p in model.named_parameters(): if not name.startswith(tuple(trainable_prefixes)): "
           "p.requires_grad_(False); return [p for p in model.parameters() if p.requires_grad]   (eq. tl-freeze)"),
)


# =========================================================================== dropout
# dropout(x, p=0.5, training=True, generator=None): inverted dropout: each entry zeroed with probability p,
# survivors scaled by 1 / (1 - p); identity when not training or p == 0.

DROPOUT_OUTCOMES = ["0", "x / (1 - p)", "x", "a value that is none of 0, x, x / (1 - p)"]


def _p_training(args, kwargs):
    p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    training = args[2] if len(args) > 2 else kwargs.get("training", True)
    return p, training


def dropout_law(x, p=0.5, training=True, *, keep=None, scaled=True):
    """Per entry: P(0), P(x / (1 - p)), P(x), P(anything else). `keep` and `scaled` give mistakes' laws."""
    law = torch.zeros(*x.shape, 4, dtype=torch.float64)
    if not training or p == 0:
        law[..., 1 if p == 0 else 2] = 1.0      # the identity (x / (1 - 0) is x)
        return law
    kept = 1 - p if keep is None else keep(p)
    law[..., 0] = 1 - kept
    law[..., {True: 1, False: 2, "times": 3}[scaled]] = kept
    return law


def dropout_observe(result, args, kwargs):
    x = args[0]
    p, _ = _p_training(args, kwargs)
    problem = tensor_form(x, result)
    if problem:
        return problem
    r = result.detach()
    seen = torch.full(r.shape, 3, dtype=torch.long)
    seen[close_to(r, x)] = 2
    seen[close_to(r, x / (1 - p))] = 1
    seen[r == 0] = 0
    return seen


def _dropout(x, p=0.5, training=True, generator=None, *, flaw=None):
    """The mistakes' code: a Bernoulli mask from `generator` (or the global RNG), scaled as the flaw says."""
    if flaw != "ignores_training" and (not training or p == 0):
        return x
    keep = p if flaw == "keeps_p" else 1 - p
    mask = torch.bernoulli(torch.full_like(x, keep), generator=None if flaw == "global_rng" else generator)
    scale = {"unscaled": 1.0, "times_keep": 1 - p}.get(flaw, 1 / (1 - p))
    return x * mask * scale


def _law_ignoring_training(x, p=0.5, training=True):
    return dropout_law(x, p, True)


DROPOUT_MISTAKES = [
    SamplingMistake("no rescaling", partial(_dropout, flaw="unscaled"),
                    "your kept entries are not scaled: divide them by 1 - p (inverted dropout), so that the "
                    "expected output equals x", law=partial(dropout_law, scaled=False), passes=1e-12),
    SamplingMistake("keeps with probability p", partial(_dropout, flaw="keeps_p"),
                    "your code keeps an entry with probability p: p is the probability of dropping it, so keep "
                    "with probability 1 - p", law=partial(dropout_law, keep=lambda p: p), passes=1e-12),
    SamplingMistake("ignores training", partial(_dropout, flaw="ignores_training"),
                    "your code drops entries in evaluation mode too: return x unchanged when training is False",
                    law=_law_ignoring_training, passes=1e-12),
    SamplingMistake("multiplies by 1 - p", partial(_dropout, flaw="times_keep"),
                    "your code multiplies the kept entries by 1 - p: divide by 1 - p instead (the scaling makes "
                    "up for the dropped mass)", law=partial(dropout_law, scaled="times"), passes=1e-12),
    SamplingMistake("dropout ignores the generator", partial(_dropout, flaw="global_rng"),
                    "your mask comes from the global RNG: pass generator=generator to torch.bernoulli / "
                    "torch.rand", rng="global", passes=1e-12),
]


def _x_case(*shape, dtype=f32, data=0, transpose=False, **kwargs):
    x = randn(*shape, seed=data, dtype=dtype)
    return call(x.T if transpose else x, **kwargs)


def dropout_cases():
    return [
        draws(_x_case, 4000, p=0.2, seed=1, calls=2, note="p=0.2, 8,000 entries"),
        draws(_x_case, 30, 40, dtype=f64, data=1, p=0.7, seed=2, calls=2, note="float64, p=0.7"),
        draws(_x_case, 30, 20, data=2, transpose=True, p=0.1, seed=3, calls=2, note="non-contiguous, p=0.1"),
        draws(_x_case, 2, 500, data=3, seed=4, calls=2, note="default p (0.5)"),
        draws(_x_case, 64, data=4, p=0.3, training=False, seed=5, note="training=False: the identity"),
        draws(_x_case, 8, 8, data=5, p=0.0, seed=6, note="p=0: the identity"),
    ]


DROPOUT = StochasticExercise(
    name="dropout",
    chapter="classic_ml/training_loop",
    signature="dropout(x, p=0.5, training=True, generator=None)",
    oracle=dropout_law,
    cases=dropout_cases,
    mistakes=DROPOUT_MISTAKES,
    observe=dropout_observe,
    names=lambda args, kwargs: DROPOUT_OUTCOMES,
    false_rejection=1e-7,       # P(a correct solution fails), recomputed by tests/test_kind_stochastic.py
    samples=13_728,
    forbidden=("F.dropout", "torch.dropout", "torch.nn.functional.dropout"),
    hints=("inverted dropout (eq. tl-dropout): zero each entry with probability p and scale the survivors so that "
           "the expected output is x (eq. tl-dropout-mean); at evaluation it is the identity",
           "a keep mask from torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p (or torch.bernoulli of "
           "1 - p with the generator); p is the probability of DROPPING",
           "if not training or p == 0: return x; mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) "
           ">= p; return x * mask / (1 - p)   (eq. tl-dropout)"),
)


# =========================================================================== xavier_uniform_ and kaiming_normal_

def fans(w):
    """(fan_in, fan_out) of a weight (out, in, *kernel): the inputs and outputs of one unit, times the kernel's
    receptive field (eq. tl-fan). A plain specification, the one nn.init uses."""
    receptive = math.prod(w.shape[2:])
    return w.shape[1] * receptive, w.shape[0] * receptive


def _gain(nonlinearity, a):
    return nn.init.calculate_gain(nonlinearity, a)


def xavier_law(w, gain=1.0, *, flaw=None):
    """U(-bound, bound), bound = gain sqrt(6 / (fan_in + fan_out)) (eq. tl-xavier); flaws give the mistakes' laws."""
    fan_in, fan_out = (w.shape[1], w.shape[0]) if flaw == "no_receptive_field" else fans(w)
    g = {"no_gain": 1.0, "gain_in_sqrt": math.sqrt(gain)}.get(flaw, gain)
    if flaw == "std_as_bound":
        return Law("uniform", g * math.sqrt(2.0 / (fan_in + fan_out)))
    if flaw == "normal":
        return Law("normal", g * math.sqrt(2.0 / (fan_in + fan_out)))
    if flaw == "fan_in_only":
        return Law("uniform", g * math.sqrt(3.0 / fan_in))
    return Law("uniform", g * math.sqrt(6.0 / (fan_in + fan_out)))


def _xavier(w, gain=1.0, *, flaw=None):
    """The mistakes' code: draws the law of `flaw` (in place, under no_grad, unless the flaw says otherwise)."""
    law = xavier_law(w, gain, flaw=None if flaw in ("new_tensor", "no_no_grad") else flaw)
    if flaw == "new_tensor":
        return torch.empty_like(w).uniform_(-law.scale, law.scale)
    if flaw == "no_no_grad":
        return w.uniform_(-law.scale, law.scale)
    with torch.no_grad():
        return w.normal_(0.0, law.scale) if law.family == "normal" else w.uniform_(-law.scale, law.scale)


def _weight(*shape, dtype=f32, transpose=False, parameter=False, **kwargs):
    """An unfilled weight (NaN everywhere, so that entries left unfilled show), as the first argument."""
    w = torch.full(shape[::-1] if transpose else shape, float("nan"), dtype=dtype)
    w = w.T if transpose else w
    return call(nn.Parameter(w) if parameter else w, **kwargs)


def _weight_positional(shape, *args, dtype=f32):
    return call(torch.full(shape, float("nan"), dtype=dtype), *args)


def xavier_cases():
    relu = _gain("relu", 0)
    return [
        draws(_weight, 256, 128, seed=1, note="a Linear(128, 256) weight, gain 1"),
        draws(_weight, 512, 128, dtype=f64, gain=relu, seed=2, note="float64, gain sqrt(2) (ReLU)"),
        draws(_weight, 64, 32, 3, 3, seed=3, note="a Conv2d(32, 64, 3) weight: the fans count the 3x3 kernel"),
        draws(_weight, 96, 48, 7, dtype=f64, seed=4, note="a Conv1d(48, 96, 7) weight, float64"),
        draws(_weight_positional, (128, 512), 2.5, seed=5, note="gain 2.5, passed positionally"),
        draws(_weight, 64, 512, transpose=True, seed=6, note="a non-contiguous (transposed) weight"),
        draws(_weight, 200, 300, parameter=True, seed=7, note="an nn.Parameter that requires grad"),
        draws(_weight, 1, 20000, seed=8, note="a single output row: fan_out = 1"),
    ]


X = partial(_xavier)
XAVIER_MISTAKES = [
    SamplingMistake("the std as the bound", partial(X, flaw="std_as_bound"),
                    "your bound is the standard deviation sqrt(2 / (fan_in + fan_out)): a uniform law on [-a, a] "
                    "has variance a^2 / 3, so the bound is sqrt(3) times that, gain sqrt(6 / (fan_in + fan_out))",
                    law=partial(xavier_law, flaw="std_as_bound"), passes=1e-12),
    SamplingMistake("receptive field ignored", partial(X, flaw="no_receptive_field"),
                    "for a convolution weight (out, in, kh, kw) each unit sees in * kh * kw inputs: multiply both "
                    "fans by the kernel's size (w[0, 0].numel())", law=partial(xavier_law, flaw="no_receptive_field"),
                    passes=1e-12),
    SamplingMistake("gain ignored", partial(X, flaw="no_gain"),
                    "your bound ignores gain: multiply it by gain (gain^2 multiplies the variance)",
                    law=partial(xavier_law, flaw="no_gain"), passes=1e-12),
    SamplingMistake("gain inside the square root", partial(X, flaw="gain_in_sqrt"),
                    "your bound is sqrt(6 gain / (fan_in + fan_out)): gain scales the standard deviation, so it "
                    "stands outside the square root (gain^2 multiplies the variance)",
                    law=partial(xavier_law, flaw="gain_in_sqrt"), passes=1e-12),
    SamplingMistake("normal, not uniform", partial(X, flaw="normal"),
                    "your values are normal (that is xavier_normal_): xavier_uniform_ draws from U(-a, a) with a = "
                    "gain sqrt(6 / (fan_in + fan_out))", law=partial(xavier_law, flaw="normal"), passes=1e-12),
    SamplingMistake("fan_in only", partial(X, flaw="fan_in_only"),
                    "your bound uses fan_in alone (LeCun's rule): Xavier averages the two fans, Var = 2 / (fan_in + "
                    "fan_out), to keep both the forward and the backward variance",
                    law=partial(xavier_law, flaw="fan_in_only"), passes=1e-12),
    SamplingMistake("returns a new tensor", partial(X, flaw="new_tensor"),
                    "you returned a new tensor and left w as it was: fill w itself in place (w.uniform_(-a, a)) and "
                    "return it"),
    SamplingMistake("fills a Parameter outside no_grad", partial(X, flaw="no_no_grad"),
                    "an nn.Parameter requires grad, and autograd forbids writing into such a leaf: fill it inside "
                    "`with torch.no_grad():`"),
]

INIT_FORBIDDEN = ("nn.init.xavier_uniform_", "nn.init.xavier_normal_", "nn.init.kaiming_uniform_",
                  "nn.init.kaiming_normal_", "nn.init._calculate_fan_in_and_fan_out", "nn.init._calculate_correct_fan")

XAVIER_UNIFORM_ = InitExercise(
    name="xavier_uniform_",
    chapter="classic_ml/training_loop",
    signature="xavier_uniform_(w, gain=1.0)",
    oracle=xavier_law,
    cases=xavier_cases,
    mistakes=XAVIER_MISTAKES,
    false_rejection=1e-7,       # P(a correct solution fails); the mistakes' `passes` are recomputed by the tests
    forbidden=INIT_FORBIDDEN,
    hints=("keep the variance of the activations (forward) and of the gradients (backward): Var(w) = 2 / (fan_in "
           "+ fan_out), times gain^2 (eq. tl-xavier); the fans count a convolution's kernel (eq. tl-fan)",
           "a uniform law on [-a, a] has variance a^2 / 3, so a = gain sqrt(6 / (fan_in + fan_out)); fan_in = "
           "w.shape[1] * k, fan_out = w.shape[0] * k with k = w[0, 0].numel()",
           "fan_in, fan_out = w.shape[1] * k, w.shape[0] * k; a = gain * math.sqrt(6 / (fan_in + fan_out)); with "
           "torch.no_grad(): w.uniform_(-a, a); return w   (eq. tl-xavier)"),
)


def kaiming_law(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, flaw=None):
    """N(0, std^2), std = gain / sqrt(fan), fan chosen by mode (eq. tl-kaiming); flaws give the mistakes' laws."""
    fan_in, fan_out = (w.shape[1], w.shape[0]) if flaw == "no_receptive_field" else fans(w)
    if flaw == "fans_swapped":
        fan_in, fan_out = fan_out, fan_in
    fan = fan_in if mode == "fan_in" or flaw == "mode_ignored" else fan_out
    if flaw == "a_ignored":
        a = 0.0
    gain = _gain("leaky_relu" if flaw == "nonlinearity_ignored" else nonlinearity, a)
    std = math.sqrt(gain / fan) if flaw == "gain_in_sqrt" else gain / math.sqrt(fan)
    return Law("uniform", math.sqrt(3.0) * std) if flaw == "uniform" else Law("normal", std)


def _kaiming(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, flaw=None):
    law = kaiming_law(w, a, mode, nonlinearity, flaw=None if flaw in ("new_tensor", "returns_none") else flaw)
    if flaw == "new_tensor":
        return torch.randn_like(w) * law.scale
    with torch.no_grad():
        if law.family == "uniform":
            w.uniform_(-law.scale, law.scale)
        else:
            w.normal_(0.0, law.scale)
    return None if flaw == "returns_none" else w


def kaiming_cases():
    return [
        draws(_weight, 512, 128, seed=11, note="a Linear(128, 512) weight, the defaults (leaky_relu, a=0: gain "
                                               "sqrt(2))"),
        draws(_weight, 128, 512, mode="fan_out", seed=12, note="mode='fan_out': fan_out = 128, fan_in = 512"),
        draws(_weight, 128, 64, 3, 3, dtype=f64, seed=13, note="a Conv2d(64, 128, 3) weight, float64"),
        draws(_weight, 256, 96, a=math.sqrt(5), seed=14, note="leaky_relu with a = sqrt(5) (what nn.Linear uses)"),
        draws(_weight, 32, 64, 5, 5, mode="fan_out", nonlinearity="relu", seed=15,
              note="a Conv2d(64, 32, 5) weight, mode='fan_out', relu"),
        draws(_weight_positional, (300, 100), 0.0, "fan_in", "linear", seed=16,
              note="nonlinearity='linear' (gain 1), every argument positional"),
        draws(_weight, 1024, 128, transpose=True, nonlinearity="tanh", seed=17,
              note="tanh (gain 5/3), a non-contiguous weight"),
        draws(_weight, 400, 200, dtype=f64, parameter=True, a=1.0, seed=18,
              note="an nn.Parameter that requires grad, float64, a = 1"),
        draws(_weight, 1, 30000, mode="fan_out", seed=19, note="a single output row, mode='fan_out': fan_out = 1"),
    ]


K = partial(_kaiming)
KAIMING_MISTAKES = [
    SamplingMistake("fan_in and fan_out swapped", partial(K, flaw="fans_swapped"),
                    "your fans are swapped: a weight is (out_features, in_features, *kernel), so fan_in = "
                    "w.shape[1] * k and fan_out = w.shape[0] * k", law=partial(kaiming_law, flaw="fans_swapped"),
                    passes=1e-12),
    SamplingMistake("mode ignored", partial(K, flaw="mode_ignored"),
                    "your code always uses fan_in: mode='fan_out' divides by fan_out instead (it keeps the "
                    "gradients' variance in the backward pass)", law=partial(kaiming_law, flaw="mode_ignored"),
                    passes=1e-12),
    SamplingMistake("receptive field ignored", partial(K, flaw="no_receptive_field"),
                    "for a convolution weight (out, in, kh, kw) each unit sees in * kh * kw inputs: multiply the "
                    "fan by the kernel's size (w[0, 0].numel())",
                    law=partial(kaiming_law, flaw="no_receptive_field"), passes=1e-12),
    SamplingMistake("gain inside the square root", partial(K, flaw="gain_in_sqrt"),
                    "your std is sqrt(gain / fan): the gain multiplies the standard deviation, std = gain / "
                    "sqrt(fan), so the variance is gain^2 / fan", law=partial(kaiming_law, flaw="gain_in_sqrt"),
                    passes=1e-12),
    SamplingMistake("a ignored", partial(K, flaw="a_ignored"),
                    "your gain ignores a: for leaky_relu it is sqrt(2 / (1 + a^2)) "
                    "(nn.init.calculate_gain('leaky_relu', a))", law=partial(kaiming_law, flaw="a_ignored"),
                    passes=1e-12),
    SamplingMistake("nonlinearity ignored", partial(K, flaw="nonlinearity_ignored"),
                    "your gain ignores nonlinearity: take it from nn.init.calculate_gain(nonlinearity, a) (1 for "
                    "linear, 5/3 for tanh, sqrt(2) for relu)", law=partial(kaiming_law, flaw="nonlinearity_ignored"),
                    passes=1e-12),
    SamplingMistake("uniform, not normal", partial(K, flaw="uniform"),
                    "your values are uniform (that is kaiming_uniform_): kaiming_normal_ draws from N(0, std^2) "
                    "with std = gain / sqrt(fan)", law=partial(kaiming_law, flaw="uniform"), passes=1e-12),
    SamplingMistake("returns a new tensor", partial(K, flaw="new_tensor"),
                    "you returned a new tensor and left w as it was: fill w itself in place (w.normal_(0, std)) "
                    "and return it"),
    SamplingMistake("returns None", partial(K, flaw="returns_none"),
                    "you filled w but returned None: end with `return w`, as nn.init's functions do"),
]

KAIMING_NORMAL_ = InitExercise(
    name="kaiming_normal_",
    chapter="classic_ml/training_loop",
    signature='kaiming_normal_(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu")',
    oracle=kaiming_law,
    cases=kaiming_cases,
    mistakes=KAIMING_MISTAKES,
    false_rejection=1e-7,       # P(a correct solution fails); the mistakes' `passes` are recomputed by the tests
    forbidden=INIT_FORBIDDEN,
    hints=("keep the variance through a layer and its nonlinearity: Var(w) = gain^2 / fan (eq. tl-kaiming), fan "
           "= fan_in or fan_out by mode, counting a convolution's kernel (eq. tl-fan)",
           "gain = nn.init.calculate_gain(nonlinearity, a) (sqrt(2 / (1 + a^2)) for leaky_relu); std = gain / "
           "sqrt(fan); fan_in = w.shape[1] * k, fan_out = w.shape[0] * k, k = w[0, 0].numel()",
           "fan = fan_in if mode == 'fan_in' else fan_out; std = calculate_gain(nonlinearity, a) / math.sqrt(fan); "
           "with torch.no_grad(): w.normal_(0, std); return w   (eq. tl-kaiming)"),
)

register(TRAIN_ONE_EPOCH, EVALUATE, FREEZE_EXCEPT, DROPOUT, XAVIER_UNIFORM_, KAIMING_NORMAL_)
