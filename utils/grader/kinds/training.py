"""The training-loop kind: a function that drives a model, data, an optimizer and a loss the grader builds
(train_one_epoch, evaluate, freeze_except), compared with a reference loop run on an identical copy.

case.make() -> Setup(model, args, seed): the reader's function is called as target(model, *args). Every
call gets fresh objects built from fixed seeds, so the reference loop and the reader's loop start from
identical copies. The parts, in order:

    forward passes              how many times the model ran (one per batch)       } for a `Probe`
    forward 3                   the mode it ran in and whether autograd recorded    }
    returned value              the mean loss, the accuracy, or the names of returned parameters
    autograd graphs kept ...    graphs of earlier batches still alive (for a `WatchedLoss`)
    parameter fc1.weight ...    every parameter, its requires_grad flag and every buffer afterwards

Dropout draws its masks from torch's global generator, which nn.Dropout offers no way to replace: the only
way to give the reference loop and the reader's loop the same masks is to reseed the global generator
identically right before each (`torch.manual_seed(setup.seed)`). The call runs inside
`torch.random.fork_rng`, so the reader's own random state is restored afterwards and grading does not
change what their notebook draws next. The order of the draws still matters: a loop that runs an extra
forward, or draws random numbers of its own, gets different masks, and its parameters differ.

Build the optimizers with `kinds.optimizer.eager(torch.optim.SGD)(...)`: the same optimizer without the
wrapper whose first step() imports torch._dynamo (about 3 s), so a first check stays within a second.
`probe` and `classification_data` build a seeded Probe and data whose labels make accuracy meaningful.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ...i18n import Msg, msg, tr
from ..core import Exercise
from ..protocol import Outcome, attempt, detached, listed, tensors_in


@dataclass
class Setup:
    """What the grader hands the reader's function: target(model, *args), right after torch.manual_seed(seed)."""

    model: nn.Module
    args: tuple = ()
    seed: int = 0


@dataclass(frozen=True)
class Forward:
    """How one forward pass ran: the mode of the model's layers and whether autograd was recording."""

    mode: str           # "train", "eval" or "mixed train/eval"
    grad: bool

    def __repr__(self) -> str:        # in the reader's language: a report shows it inside a message
        return tr(msg("{mode} mode, building a graph", mode=self.mode) if self.grad else
                  msg("{mode} mode, no graph (torch.no_grad)", mode=self.mode))


class Probe(nn.Module):
    """A small classifier with BatchNorm and Dropout (so train/eval mode changes its output and its buffers)
    that records, on every forward, the mode of its layers and whether autograd is recording (`log`)."""

    def __init__(self, d_in: int = 8, d_hidden: int = 16, n_classes: int = 3, p: float = 0.3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.bn = nn.BatchNorm1d(d_hidden)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(d_hidden, n_classes)
        self.log: list[Forward] = []

    def forward(self, x):
        modes = {m.training for m in self.modules()}
        self.log.append(Forward("train" if modes == {True} else "eval" if modes == {False} else "mixed train/eval",
                                torch.is_grad_enabled()))
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))

    def __repr__(self) -> str:
        return (f"Probe({self.fc1.in_features}→{self.fc1.out_features}, BatchNorm, ReLU, Dropout({self.drop.p}), "
                f"→{self.fc2.out_features})")


def probe(seed: int = 0, mode: str = "train", stale_grads: bool = False, **sizes) -> Probe:
    """A Probe with seeded weights, non-default BatchNorm affine parameters and running statistics, put in
    `mode`; with `stale_grads`, every .grad holds what an earlier backward left there."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Probe(**sizes)
    with torch.no_grad():
        model.bn.weight.uniform_(0.5, 1.5, generator=g)
        model.bn.bias.normal_(0.0, 0.3, generator=g)
        model.bn.running_mean.normal_(0.0, 0.3, generator=g)
        model.bn.running_var.uniform_(0.5, 2.0, generator=g)
    model.train(mode == "train")
    if stale_grads:
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
    return model


def classification_data(model: Probe, n: int, batch_size: int, seed: int = 0, loader: bool = False,
                        shuffle: bool = False, agree: float = 0.7):
    """n samples (x, y) for `model`: y is the model's own eval-mode prediction for about a fraction `agree` of
    them and a random class otherwise, so its accuracy is far from chance and changes with the mode. A list of
    (x, y) batches, or (loader=True) a DataLoader over a TensorDataset (shuffled by its own seeded generator)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.fc1.in_features, generator=g)
    was = model.training
    model.eval()
    with torch.no_grad():
        predicted = model.fc2(torch.relu(model.bn(model.fc1(x)))).argmax(-1)
    model.train(was)
    noise = torch.randint(0, model.fc2.out_features, (n,), generator=g)
    y = torch.where(torch.rand(n, generator=g) < agree, predicted, noise)
    if loader:
        order = torch.Generator().manual_seed(seed + 1) if shuffle else None
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=order)
    return [(x[i:i + batch_size].clone(), y[i:i + batch_size].clone()) for i in range(0, n, batch_size)]


class Tagged(torch.autograd.Function):
    """The identity, whose autograd node holds `marker`: the marker lives exactly as long as the graph does."""

    @staticmethod
    def forward(ctx, x, marker):
        ctx.marker = marker
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Marker:
    pass


class WatchedLoss(nn.Module):
    """A loss (CrossEntropyLoss by default) that notices when the autograd graphs of earlier batches stay alive.

    Each loss it returns carries a marker in its graph. When batch k's loss is computed, the reader may still
    hold batch k-1's loss (its variable is reassigned after this call returns); the graphs of batches before
    that are alive only if the reader keeps them (`total += loss`, `losses.append(loss)`). `kept` is the most
    such graphs alive at once.
    """

    def __init__(self, loss: nn.Module | None = None):
        super().__init__()
        self.loss = loss if loss is not None else nn.CrossEntropyLoss()
        self.markers: list = []
        self.kept = 0

    def forward(self, output, target):
        self.kept = max(self.kept, sum(r() is not None for r in self.markers[:-1]))
        marker = Marker()
        self.markers.append(weakref.ref(marker))
        return Tagged.apply(self.loss(output, target), marker)

    def __repr__(self) -> str:
        return repr(self.loss)


def _describe(obj) -> str:
    if isinstance(obj, nn.Module) and not isinstance(obj, WatchedLoss):
        n = sum(p.numel() for p in obj.parameters())
        frozen = sum(not p.requires_grad for p in obj.parameters())
        model = repr(obj) if isinstance(obj, Probe) else msg("{name} ({n:,} parameters)", name=type(obj).__name__, n=n)
        said = [msg("{model} in {mode} mode", model=model, mode="train" if obj.training else "eval")]
        if frozen:
            said.append(msg("1 parameter tensor already frozen") if frozen == 1 else
                        msg("{n} parameter tensors already frozen", n=frozen))
        if any(p.grad is not None for p in obj.parameters()):
            said.append("with gradients left in .grad by an earlier backward")
        return listed(said)
    if isinstance(obj, DataLoader):
        sizes = [len(obj.dataset) % obj.batch_size or obj.batch_size] if obj.batch_size else []
        return msg("DataLoader({dataset} of {n}, batch_size={size}{shuffle}; {batches} batches, the last of {last})",
                   dataset=type(obj.dataset).__name__, n=len(obj.dataset), size=obj.batch_size,
                   shuffle=", shuffle=True" if isinstance(obj.sampler, torch.utils.data.RandomSampler) else "",
                   batches=len(obj), last=sizes[0] if sizes else "?")
    if isinstance(obj, list) and obj and all(isinstance(b, (tuple, list)) for b in obj):
        return msg("a list of {n} (x, y) batches of sizes {sizes}", n=len(obj), sizes=[len(b[0]) for b in obj])
    if isinstance(obj, torch.optim.Optimizer):
        keys = [k for k in ("lr", "momentum", "betas", "weight_decay") if obj.defaults.get(k)]
        return f"{type(obj).__name__}({', '.join(f'{k}={obj.defaults[k]!r}' for k in keys)})"
    r = repr(obj)
    return r if len(r) < 60 else r[:57] + "..."


def describe_setup(name: str, setup: Setup) -> str:
    return msg("{name}(model: {model}, {args})", name=name, model=_describe(setup.model),
               args=listed(_describe(a) for a in setup.args))


def data_tensors(args) -> list:
    """The data tensors among the arguments: a DataLoader's dataset, or a list of batches."""
    found = []
    for a in args:
        if isinstance(a, DataLoader) and hasattr(a.dataset, "tensors"):
            found += list(a.dataset.tensors)
        elif isinstance(a, (list, tuple)):
            found += tensors_in(a)
    return found


@dataclass(frozen=True)
class Returned:
    """One item of a returned list of parameters: the model's parameter `name`, or what else it was."""

    name: str

    def __repr__(self) -> str:
        return tr(self.name) if isinstance(self.name, Msg) else self.name


def _parameter_names(value, model: nn.Module) -> list:
    """A returned list of parameters as their names (fc1.weight); anything else in it described as such."""
    names = {id(p): n for n, p in model.named_parameters()}

    def one(p):
        if id(p) in names:
            return Returned(names[id(p)])
        shown = repr(p) if not isinstance(p, torch.Tensor) else f"tensor of shape {tuple(p.shape)}"
        return Returned(msg("<a {name} {shown}, not one of the model's parameters>", name=type(p).__name__,
                            shown=shown[:40]))
    return [one(p) for p in value]


@dataclass
class TrainingExercise(Exercise):
    """`returns`: the label of the returned value ('the mean batch loss it returned'); `returns_parameters`:
    the function returns a list of the model's parameters, compared by name and order (freeze_except)."""

    returns: str = "returned value"
    returns_parameters: bool = False
    kind = "training"

    def pristine_inputs(self, case) -> tuple:
        return tuple(data_tensors(case.make().args))

    def outcome(self, target, case, guard) -> Outcome:
        setup: Setup = case.make()
        model = setup.model
        out = Outcome(call=describe_setup(self.name, setup))
        if isinstance(model, Probe):
            model.log.clear()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(setup.seed)
            with attempt(out, "call", guard):
                value = target(model, *setup.args)
        if out.failed:
            return out
        if isinstance(model, Probe):
            out.parts.append(("forward passes (one per batch)", len(model.log)))
            out.parts += [(msg("forward {k}", k=k), f) for k, f in enumerate(model.log, 1)]
        if self.returns_parameters and isinstance(value, (list, tuple)):
            value = _parameter_names(value, model)
        out.parts.append((self.returns, detached(value)))
        for loss in (a for a in setup.args if isinstance(a, WatchedLoss)):
            out.parts.append(("autograd graphs of earlier batches kept alive (accumulate loss.item(), not the "
                              "loss tensor)", loss.kept))
        out.parts.append(("requires_grad of each parameter afterwards",
                          {n: p.requires_grad for n, p in model.named_parameters()}))
        out.parts += [(msg("parameter {name} afterwards", name=n), p.detach().clone())
                      for n, p in model.named_parameters()]
        out.parts += [(msg("buffer {name} afterwards", name=n), b.detach().clone()) for n, b in model.named_buffers()]
        out.inputs_after = tuple(detached(t) for t in data_tensors(setup.args))
        return out
