"""The training-loop kind (utils/grader/kinds/training.py).

Three example declarations, written as the classic-ML chapter will register them (CURRICULUM.md Part 11,
"training_loop"): `train_one_epoch`, `evaluate` and `freeze_except`, each with its reference loop as a plain
specification and its registered mistakes (the reference with one piece changed, `flaw=`). The tests prove that
correct loops in several styles pass, that every mistake is rejected and named, that plausible wrong loops are
rejected without a false diagnosis, that the probes (mode and grad recorder, graph watcher) see what they
claim, and that bad input gets a clear message.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest
import torch
from kindcheck import timed
from torch import nn

from utils.grader.compare import same
from utils.grader.core import Case, Mistake, evaluate
from utils.grader.kinds.optimizer import eager
from utils.grader.kinds.training import (
    Probe,
    Setup,
    TrainingExercise,
    WatchedLoss,
    classification_data,
    probe,
)

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


def epoch_case(note, *args, **kwargs):
    return Case(make=partial(_epoch, *args, **kwargs), note=note)


def epoch_cases():
    return [
        epoch_case("SGD with momentum, a list of batches", 0, sgd),
        epoch_case("Adam, a DataLoader over a TensorDataset", 1, adam, loader=True),
        epoch_case("the model arrives in eval mode (as evaluate leaves it)", 2, sgd, mode="eval"),
        epoch_case("gradients left in .grad by an earlier backward", 3, adam, stale_grads=True),
        epoch_case("a shuffled DataLoader, a last batch of 4", 4, sgd, n=52, loader=True, shuffle=True),
        epoch_case("label smoothing 0.1, batches of 8", 5, adam, n=36, batch_size=8,
                   loss=nn.CrossEntropyLoss(label_smoothing=0.1)),
    ]


T = partial(train_one_epoch_spec)
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
    hint="model.train(); then for every batch: optimizer.zero_grad(), loss = loss_fn(model(x), y), "
         "loss.backward(), optimizer.step(), total += loss.item(); return total / number of batches.",
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


def eval_case(note, *args, **kwargs):
    return Case(make=partial(_evaluation, *args, **kwargs), note=note)


def eval_cases():
    return [
        eval_case("a list of batches, the model in train mode", 10),
        eval_case("a DataLoader, the last batch of 6", 11, loader=True),
        eval_case("the model already in eval mode", 12, mode="eval"),
        eval_case("batches of 5, the last of 2", 13, n=42, batch_size=5),
        eval_case("one batch holding every sample, a DataLoader", 14, n=40, batch_size=40, loader=True),
    ]


E = partial(evaluate_spec)
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
    hint="model.eval(); under torch.no_grad() count (model(x).argmax(-1) == y) over every batch; return "
         "correct / total. Leaving the model in eval mode afterwards is fine: train_one_epoch calls model.train().",
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


def freeze_case(note, *args, **kwargs):
    return Case(make=partial(_tiny, *args, **kwargs), note=note)


def freeze_cases():
    return [
        freeze_case("one prefix, a list", 20, ["head"]),
        freeze_case("two prefixes out of model order, a tuple", 21, ("layers.2.", "embed")),
        freeze_case("LoRA adapters only", 22, ["layers.0.lora", "layers.1.lora", "layers.2.lora"]),
        freeze_case("a matching parameter already frozen stays frozen", 23, ["embed", "head"], frozen=("embed",)),
        freeze_case("no prefix: everything frozen", 24, []),
        freeze_case("the empty prefix matches every name", 25, ("",), frozen=("lm_head",)),
    ]


Z = partial(freeze_except_spec)
FREEZE_MISTAKES = [
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
    hint="for name, p in model.named_parameters(): if not name.startswith(tuple(trainable_prefixes)): "
         "p.requires_grad_(False); return [p for p in model.parameters() if p.requires_grad].",
)


# =========================================================================== correct solutions in other styles

def train_enumerate(model, loader, optimizer, loss_fn):
    model.train()
    losses = []
    for inputs, targets in loader:
        optimizer.zero_grad(set_to_none=False)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def train_model_zero_grad(model, loader, optimizer, loss_fn):
    """model.zero_grad() instead of the optimizer's; a running mean; len(loader) batches."""
    model.train(True)
    mean = 0.0
    for k, batch in enumerate(loader, 1):
        x, y = batch
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        mean += (loss.detach().item() - mean) / k
    assert k == len(loader)
    return float(mean)


def eval_inference_mode(model, loader):
    model.eval()
    hits = n = 0
    with torch.inference_mode():
        for x, y in loader:
            hits += int((model(x).argmax(1) == y).sum())
            n += y.numel()
    return hits / n


@torch.no_grad()
def eval_restores_mode(model, loader):
    """The decorator form, and the mode restored afterwards (the contract allows either)."""
    was = model.training
    model.eval()
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x).softmax(-1).argmax(-1))
        labels.append(y)
    model.train(was)
    return (torch.cat(preds) == torch.cat(labels)).float().mean().item()


def freeze_with_tuple(model, trainable_prefixes):
    keep = tuple(trainable_prefixes)
    for name, param in model.named_parameters():
        if not name.startswith(keep):
            param.requires_grad = False
    return [param for param in model.parameters() if param.requires_grad]


def freeze_by_filter(model, trainable_prefixes):
    out = []
    for name, param in model.named_parameters():
        if any(name[:len(p)] == p for p in trainable_prefixes):
            if param.requires_grad:
                out.append(param)
        else:
            param.requires_grad_(False)
    return out


# =========================================================================== plausible wrong solutions (not registered)

def train_divides_by_dataset(model, loader, optimizer, loss_fn):
    model.train()
    total, n = 0.0, 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
        n += len(y)
    return total / n


def train_two_forwards(model, loader, optimizer, loss_fn):
    """Runs the model again to log the loss: an extra forward (and extra dropout draws) per batch."""
    model.train()
    total = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        with torch.no_grad():
            total += loss_fn(model(x), y).item()
    return total / len(loader)


def train_returns_loss_item_of_last(model, loader, optimizer, loss_fn):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return loss.item()


def train_half_train(model, loader, optimizer, loss_fn):
    """`model.training = True` sets the flag on the top module only."""
    model.training = True
    return train_one_epoch_spec(model, loader, optimizer, loss_fn, flaw="never_train")


def eval_forgets_argmax_dim(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).max(-1).values.round() == y).sum().item()
            total += len(y)
    return correct / total


def eval_returns_tensor(model, loader):
    model.eval()
    correct, total = torch.tensor(0), 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(-1) == y).sum()
            total += len(y)
    return correct / total


def freeze_components(model, trainable_prefixes):
    """Requires grad only where a prefix equals the module path (misses 'layers.0.lora' -> 'layers.0.lora_A')."""
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        if not any(module == pre.rstrip(".") or module.startswith(pre.rstrip(".") + ".") for pre in trainable_prefixes):
            p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def freeze_returns_a_filter(model, trainable_prefixes):
    for name, p in model.named_parameters():
        if not name.startswith(tuple(trainable_prefixes)):
            p.requires_grad_(False)
    return filter(lambda p: p.requires_grad, model.parameters())


# =========================================================================== tests: verdicts

EXERCISES = [TRAIN_ONE_EPOCH, EVALUATE, FREEZE_EXCEPT]
CORRECT = [(TRAIN_ONE_EPOCH, f) for f in (train_enumerate, train_model_zero_grad)] + \
          [(EVALUATE, f) for f in (eval_inference_mode, eval_restores_mode)] + \
          [(FREEZE_EXCEPT, f) for f in (freeze_with_tuple, freeze_by_filter)]


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.name)
def test_the_reference_passes_itself(ex):
    report = evaluate(ex, ex.oracle)
    assert report.passed, str(report)


@pytest.mark.parametrize("ex,impl", CORRECT, ids=[f.__name__ for _, f in CORRECT])
def test_correct_solutions_in_other_styles_pass(ex, impl):
    report = evaluate(ex, impl)
    assert report.passed, str(report)


MISTAKES = [(ex, m) for ex in EXERCISES for m in ex.mistakes]


@pytest.mark.parametrize("ex,mistake", MISTAKES, ids=[f"{e.name}: {m.name}" for e, m in MISTAKES])
def test_every_mistake_is_rejected_and_named(ex, mistake):
    report = evaluate(ex, mistake.impl)
    assert not report.passed
    assert report.failure.mistake == mistake.name, str(report)
    assert mistake.message in str(report)


WRONG = [(TRAIN_ONE_EPOCH, f) for f in (train_divides_by_dataset, train_two_forwards,
                                        train_returns_loss_item_of_last, train_half_train)] + \
        [(EVALUATE, f) for f in (eval_forgets_argmax_dim, eval_returns_tensor)] + \
        [(FREEZE_EXCEPT, f) for f in (freeze_components, freeze_returns_a_filter)]


@pytest.mark.parametrize("ex,impl", WRONG, ids=[f.__name__ for _, f in WRONG])
def test_plausible_wrong_solutions_are_rejected_without_a_false_diagnosis(ex, impl):
    report = evaluate(ex, impl)
    assert not report.passed, f"{impl.__name__} passes"
    assert report.failure.mistake is None, str(report)


# =========================================================================== tests: what the reports say

def test_a_model_left_in_eval_mode_is_named_by_its_first_forward():
    report = evaluate(TRAIN_ONE_EPOCH, partial(train_one_epoch_spec, flaw="never_train"))
    assert report.failure.note == "the model arrives in eval mode (as evaluate leaves it)"
    assert report.failure.problem.message == ("forward 1 is eval mode, building a graph; "
                                              "expected train mode, building a graph")


def test_evaluate_without_no_grad_is_named_by_its_first_forward():
    report = evaluate(EVALUATE, partial(evaluate_spec, flaw="builds_a_graph"))
    assert report.failure.case == 0
    assert "forward 1 is eval mode, building a graph; expected eval mode, no graph" in report.failure.problem.message


def test_graphs_kept_alive_are_counted():
    report = evaluate(TRAIN_ONE_EPOCH, partial(train_one_epoch_spec, flaw="keep_graphs"))
    assert report.failure.problem.message.startswith("autograd graphs of earlier batches kept alive")
    assert "is 3; expected 0" in report.failure.problem.message      # 5 batches: 3 earlier graphs at the last


def test_zero_grad_between_backward_and_step_is_the_same_mistake_as_step_before_backward():
    report = evaluate(TRAIN_ONE_EPOCH, partial(train_one_epoch_spec, flaw="zero_grad_after_backward"))
    assert report.failure.mistake == "steps without gradients"


def test_a_returned_loss_tensor_is_told_to_be_a_float():
    report = evaluate(TRAIN_ONE_EPOCH, partial(train_one_epoch_spec, flaw="sum_tensors"))
    assert "return a Python float" in report.failure.problem.message


def test_a_half_set_train_flag_shows_as_mixed_mode():
    report = evaluate(TRAIN_ONE_EPOCH, train_half_train)
    assert "forward 1 is mixed train/eval mode" in report.failure.problem.message


def test_stale_gradients_matter_only_where_the_case_says_so():
    report = evaluate(TRAIN_ONE_EPOCH, partial(train_one_epoch_spec, flaw="zero_grad_last"))
    assert report.failure.note == "gradients left in .grad by an earlier backward"
    assert report.n_passed == 3


def test_returning_names_is_shown_as_not_parameters():
    report = evaluate(FREEZE_EXCEPT, partial(freeze_except_spec, flaw="returns_names"))
    assert report.failure.problem.message == ("the parameters it returned (by name, in order)[0] is <a str "
                                              "'head.weight', not one of the model's parameters>; expected head.weight")


# =========================================================================== tests: the probes and the cases

def test_dropout_is_reproducible_only_with_the_same_global_seed():
    """Why the kind reseeds torch's global generator: nn.Dropout has no generator of its own."""
    setup = TRAIN_ONE_EPOCH.all_cases()[0].make()
    x = setup.args[0][0][0]
    torch.manual_seed(5)
    a = setup.model(x)
    torch.manual_seed(5)
    b = setup.model(x)
    c = setup.model(x)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_grading_restores_the_readers_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluate(TRAIN_ONE_EPOCH, train_enumerate)
    assert torch.equal(torch.rand(3), expected)


def test_the_mode_changes_the_accuracy_and_the_buffers():
    """Train-mode evaluation changes the buffers always and the accuracy mostly, not only the log; and the
    labels make the accuracy far from chance (1/3)."""
    differ = 0
    for case in EVALUATE.all_cases():
        s, s2 = case.make(), case.make()
        if not s.model.training:
            continue                        # arrived in eval mode: forgetting model.eval() changes nothing
        right = evaluate_spec(s.model, s.args[0])
        torch.manual_seed(s.seed)
        wrong = evaluate_spec(s2.model, s2.args[0], flaw="train_mode")
        assert 0.6 < right < 0.95
        assert not torch.equal(s2.model.bn.running_mean, s.model.bn.running_mean)
        differ += wrong != right
    assert differ >= 3


def test_the_epoch_cases_cover_what_they_claim():
    setups = [c.make() for c in TRAIN_ONE_EPOCH.all_cases()]
    assert any(not s.model.training for s in setups)
    assert any(all(p.grad is not None for p in s.model.parameters()) for s in setups)
    assert any(isinstance(s.args[0], torch.utils.data.DataLoader) for s in setups)
    assert any(isinstance(s.args[0], list) for s in setups)
    assert {type(s.args[1]).__mro__[1] for s in setups} == {torch.optim.SGD, torch.optim.Adam}
    assert any(len(s.args[0].dataset) % s.args[0].batch_size for s in setups
               if isinstance(s.args[0], torch.utils.data.DataLoader)), "a short last batch"


def test_the_watched_loss_counts_only_graphs_kept_by_the_caller():
    w = WatchedLoss()
    model = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    for _ in range(4):
        loss = w(model(x), y)
        loss.backward()
    assert w.kept == 0
    total = 0
    for _ in range(4):
        loss = w(model(x), y)
        total = total + loss
    assert w.kept == 2 and total.requires_grad      # at the 4th loss, those of the 1st and 2nd are alive


def test_the_probe_records_mode_and_grad():
    m = Probe()
    m.eval()
    with torch.no_grad():
        m(torch.randn(4, 8))
    m.train()
    m(torch.randn(4, 8))
    assert [repr(f) for f in m.log] == ["eval mode, no graph (torch.no_grad)", "train mode, building a graph"]


# =========================================================================== tests: bad input

def test_a_raising_loop_shows_the_readers_line():
    def train_one_epoch(model, loader, optimizer, loss_fn):
        for x, y in loader:
            loss = loss_fn(model(x), y.float())
        return loss

    report = evaluate(TRAIN_ONE_EPOCH, train_one_epoch)
    assert report.kind == "exception" and "y.float()" in report.failure.frame


@pytest.mark.parametrize("ret,kind", [(None, "wrong-type"), (np.float32(0.5), "wrong-type"), ("0.5", "wrong-type")])
def test_wrong_return_types_are_named(ret, kind):
    def evaluate_(model, loader):
        evaluate_spec(model, loader)
        return ret

    report = evaluate(EVALUATE, evaluate_)
    assert report.kind in (kind, "returned-none"), str(report)


def test_an_endless_loop_is_stopped():
    def train_one_epoch(model, loader, optimizer, loss_fn):
        while True:
            for x, _ in loader:
                model(x)

    start = time.perf_counter()
    report = evaluate(dataclasses.replace(TRAIN_ONE_EPOCH, timeout=0.5), train_one_epoch)
    assert report.kind == "timeout" and time.perf_counter() - start < 5


def test_a_forbidden_call_is_named():
    ex = dataclasses.replace(TRAIN_ONE_EPOCH, forbidden=("Tensor.backward", ))
    report = evaluate(ex, train_enumerate)
    assert report.kind == "forbidden-call" and "Tensor.backward" in report.failure.problem.message


def test_changing_the_data_in_place_is_named():
    def evaluate_(model, loader):
        for x, _ in loader:
            x.mul_(2)
        return evaluate_spec(model, loader)

    assert evaluate(EVALUATE, evaluate_).kind == "mutated-input"


def test_not_a_function_and_not_attempted():
    assert evaluate(EVALUATE, 3).kind == "wrong-type"

    def evaluate_(model, loader):
        raise NotImplementedError

    assert evaluate(EVALUATE, evaluate_).status == "not attempted"


def _verdict(report):
    f = report.failure
    return (report.status, None if f is None else (f.case, f.problem.kind, f.problem.message, f.mistake))


@pytest.mark.parametrize("ex,impl", [(TRAIN_ONE_EPOCH, partial(train_one_epoch_spec, flaw="no_zero_grad")),
                                     (TRAIN_ONE_EPOCH, train_two_forwards), (EVALUATE, eval_restores_mode)])
def test_verdicts_are_identical_when_run_twice(ex, impl):
    assert _verdict(evaluate(ex, impl)) == _verdict(evaluate(ex, impl))


@pytest.mark.parametrize("ex,impl", CORRECT[::2], ids=[f.__name__ for _, f in CORRECT[::2]])
def test_a_check_finishes_within_a_second(ex, impl):
    evaluate(ex, impl)
    report, seconds = timed(ex, impl)
    assert report.passed and seconds < 1.0


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.name)
def test_the_references_outcomes_are_deterministic(ex):
    first = [ex.outcome(ex.oracle, c, None) for c in ex.all_cases()]
    again = [ex.outcome(ex.oracle, c, None) for c in ex.all_cases()]
    for a, b in zip(first, again):
        assert a.error is None and same([v for _, v in a.parts], [v for _, v in b.parts], rtol=0, atol=0)


def test_the_first_check_in_a_fresh_process_finishes_within_a_second():
    code = ("import sys, time; sys.path[:0] = ['tests', '.']; import test_kind_training as T; "
            "from utils.grader.core import evaluate; t = time.process_time(); "
            "r = evaluate(T.TRAIN_ONE_EPOCH, T.train_enumerate); print(r.passed, time.process_time() - t)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    passed, seconds = out.stdout.split()[-2:]
    assert passed == "True" and float(seconds) < 1.0, out.stdout + out.stderr
