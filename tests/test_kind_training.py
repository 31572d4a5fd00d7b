"""The training-loop kind (utils/grader/kinds/training.py).

On the three declarations of the classic-ML chapter (utils/grader/exercises/classic_ml/training_loop.py):
`train_one_epoch`, `evaluate` and `freeze_except`, each with its reference loop as a plain specification and its
registered mistakes (the reference with one piece changed, `flaw=`). The tests prove that
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
from utils.grader.core import evaluate
from utils.grader.exercises.classic_ml.training_loop import (
    EVALUATE,
    FREEZE_EXCEPT,
    TRAIN_ONE_EPOCH,
    evaluate_spec,
    freeze_except_spec,
    train_one_epoch_spec,
)
from utils.grader.kinds.training import Probe, WatchedLoss

# The declarations are the book's own (utils/grader/exercises/classic_ml/training_loop.py): each reference loop is a
# plain specification with a keyword-only `flaw` that gives the registered mistakes' behaviour.

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
