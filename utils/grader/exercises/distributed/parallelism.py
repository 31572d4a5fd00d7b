"""Part 14, distributed training: data parallelism and Megatron-style tensor parallelism (chapter
distributed/parallelism).

Every case runs on a real gloo group of 1 to 4 forked processes (the distributed kind).

- sync_gradients(model): every rank holds the same model (seeded) and has run backward on its own equal shard
  of one batch (mean-squared error, a mean over the shard). The oracle averages every gradient with PyTorch's
  all-reduce, as DistributedDataParallel does; tests/test_distributed.py proves that the averaged gradients
  equal one process's gradients on the whole batch.
- ColumnParallelLinear(full, rank, world_size) and RowParallelLinear(full, rank, world_size): each rank builds
  its shard of a random nn.Linear `full` (the same on every rank), runs forward, then backward of a seeded
  projection of the output that is the same on every rank (every rank computes the same loss). The oracles
  slice the weight with plain indexing and, for the row layer, sum the partial products with dist.all_reduce,
  whose backward is the identity (Megatron-LM's g operator, Shoeybi et al. 2019, section 3).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ...core import Mistake
from ...kinds import DistributedExercise, Layer, OnGroup
from ...registry import register

f32, f64 = torch.float32, torch.float64


# =========================================================================== sync_gradients(model)

class TransposedLinear(nn.Module):
    """A linear layer whose weight is stored transposed: the parameter, and so its gradient, is not contiguous."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out).t())        # (n_out, n_in), strides (1, n_out)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def _model(dtype, kind="mlp"):
    """The same small model on every rank, with seeded non-default weights."""
    if kind == "norm":
        model = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3))
    elif kind == "transposed":
        model = nn.Sequential(TransposedLinear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    else:
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    model = model.to(dtype)
    if kind == "frozen":
        model[0].weight.requires_grad_(False)
    return model


def _batch(world_size, dtype, seed, per_rank=3):
    """One batch of world_size * per_rank examples: inputs (B, 5), targets (B, 3)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(per_rank * world_size, 5, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(per_rank * world_size, 3, generator=g, dtype=torch.float64).to(dtype)
    return x, y


def _shard(dtype, seed, kind="mlp", per_rank=3):
    """Rank r: the model, after backward of the mean-squared error on rows r*per_rank .. (r+1)*per_rank - 1."""
    def make(rank, world_size):
        model = _model(dtype, kind)
        x, y = _batch(world_size, dtype, seed, per_rank)
        F.mse_loss(model(x.chunk(world_size)[rank]), y.chunk(world_size)[rank]).backward()
        return (model,), {}
    return make


def average_gradients(model):
    """The oracle: one all-reduce (a sum) per gradient, divided by the world size, as DDP does."""
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _sync_cases():
    return [
        OnGroup(_shard(f32, 1), "one process: the gradients stay as they are", world_size=1),
        OnGroup(_shard(f32, 2), "two ranks", world_size=2),
        OnGroup(_shard(f64, 3), "three ranks, float64", world_size=3),
        OnGroup(_shard(f32, 4), "four ranks", world_size=4),
        OnGroup(_shard(f64, 5, "frozen"), "a frozen parameter: its .grad stays None", world_size=2),
        OnGroup(_shard(f32, 6, "norm"), "a LayerNorm and GELU in the model, three ranks", world_size=3),
        OnGroup(_shard(f64, 7, "transposed"), "a parameter stored transposed: its gradient is not contiguous",
                world_size=2),
        OnGroup(_shard(f32, 8, per_rank=1), "a shard of one example per rank", world_size=4),
    ]


def sums(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


def weights_only(model):
    for name, p in model.named_parameters():
        if "weight" in name and p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def divides_twice(model):
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            p.grad /= world
            dist.all_reduce(p.grad)
            p.grad /= world


def reduces_a_temporary(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad / dist.get_world_size())


def no_check_for_none(model):
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()


def broadcasts(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.broadcast(p.grad, src=0)


register(DistributedExercise(
    name="sync_gradients",
    chapter="distributed/parallelism",
    signature="sync_gradients(model)",
    oracle=average_gradients,
    cases=_sync_cases,
    hints=("the loss of the whole batch is the mean of the ranks' losses on equal shards, so its gradient is the "
           "mean of the ranks' gradients   (eq. dp-mean)",
           "for every parameter that has a gradient (a frozen one has .grad None): sum it over the ranks in place "
           "with dist.all_reduce, then divide it by the world size; change .grad only, not the parameters",
           "loop over model.parameters(), skip p.grad is None, dist.all_reduce(p.grad) (a sum, in place), then "
           "p.grad /= dist.get_world_size()   (eq. dp-mean)"),
    mistakes=[
        Mistake("sum, not mean", sums,
                "the gradients are summed over the ranks but not divided by the world size: the loss is a mean over "
                "the whole batch, so its gradient is the mean of the ranks' gradients; with the sum one step is N "
                "times too large"),
        Mistake("weights only", weights_only,
                "only the parameters named weight are averaged: the biases (and every other parameter) keep this "
                "rank's own gradient, and the ranks' models drift apart after the first step. Average every "
                "parameter of model.parameters()"),
        Mistake("divided twice", divides_twice,
                "the gradients are divided by the world size twice, before and after the all-reduce: divide once"),
        Mistake("all-reduce of a temporary", reduces_a_temporary,
                "dist.all_reduce(p.grad / N) sums a new tensor that nobody keeps: p.grad itself never changes. "
                "All-reduce p.grad in place, then divide it (p.grad /= N)"),
        Mistake("no check for frozen parameters", no_check_for_none,
                "a frozen parameter (requires_grad=False) has .grad None, and dist.all_reduce(None) raises: skip "
                "the parameters whose .grad is None"),
        Mistake("broadcast instead of all-reduce", broadcasts,
                "dist.broadcast copies rank 0's gradient to every rank: the other ranks' shards are ignored. The "
                "gradient of the whole batch needs every rank's contribution: all-reduce (a sum), then divide by N"),
    ],
))


# =========================================================================== Column/RowParallelLinear(full, ...)

def _full(n_in, n_out, dtype, seed):
    """A random nn.Linear (the same on every rank) with weights of a trained layer's scale."""
    g = torch.Generator().manual_seed(seed)
    full = nn.Linear(n_in, n_out)
    with torch.no_grad():
        full.weight.copy_(torch.randn(n_out, n_in, generator=g, dtype=torch.float64) / n_in ** 0.5)
        full.bias.copy_(torch.randn(n_out, generator=g, dtype=torch.float64))
    return full.to(dtype), g


def _inputs(shape, dtype, g, layout):
    if layout == "transposed":
        return torch.randn(shape[::-1], generator=g, dtype=torch.float64).to(dtype).t()
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _column(n_in, n_out, lead, dtype, seed, layout="contiguous"):
    """Every rank: the full layer and the whole input x (lead..., n_in). The input's gradient on one rank is
    the contribution of that rank's output features only (Megatron's f operator sums it), so it is not
    compared."""
    def make(rank, world_size):
        full, g = _full(n_in, n_out, dtype, seed)
        x = _inputs((*lead, n_in), dtype, g, layout)
        return Layer(((full, rank, world_size), {}), ((x,), {}), input_grad=False)
    return make


def _row(n_in, n_out, lead, dtype, seed, layout="contiguous"):
    """Rank r: the full layer and its slice of the input features, x[..., r*n_in/N:(r+1)*n_in/N] (a view:
    non-contiguous when asked), as the column-parallel layer before it returns them."""
    def make(rank, world_size):
        full, g = _full(n_in, n_out, dtype, seed)
        x = torch.randn((*lead, n_in), generator=g, dtype=torch.float64).to(dtype)
        x_shard = x.tensor_split(world_size, dim=-1)[rank]
        return Layer(((full, rank, world_size), {}), ((x_shard if layout == "view" else x_shard.contiguous(),), {}))
    return make


class ColumnSpec(nn.Module):
    """Rank r keeps rows r*out/N .. (r+1)*out/N - 1 of the weight and of the bias: its output features."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        per_rank = full.out_features // world_size
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        self.weight = nn.Parameter(full.weight.detach()[rows].clone())
        self.bias = nn.Parameter(full.bias.detach()[rows].clone())

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class RowSpec(nn.Module):
    """Rank r keeps columns r*in/N .. (r+1)*in/N - 1 of the weight and the whole bias; the partial products
    are summed with an all-reduce whose backward is the identity, and the bias is added once, after it."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        per_rank = full.in_features // world_size
        cols = slice(rank * per_rank, (rank + 1) * per_rank)
        self.weight = nn.Parameter(full.weight.detach()[:, cols].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x_shard):
        partial = F.linear(x_shard, self.weight)
        total = partial.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return partial + (total - partial.detach()) + self.bias


def _column_cases():
    return [
        OnGroup(_column(8, 12, (3,), f32, 1), "one process: the whole layer", world_size=1),
        OnGroup(_column(8, 12, (3,), f32, 2), "two ranks, 6 output features each", world_size=2),
        OnGroup(_column(8, 12, (2, 5), f64, 3), "three ranks, input (B, T, d), float64", world_size=3),
        OnGroup(_column(8, 12, (1,), f32, 4), "four ranks, a batch of one", world_size=4),
        OnGroup(_column(8, 12, (3,), f64, 5, "transposed"), "a non-contiguous input, two ranks", world_size=2),
        OnGroup(_column(6, 16, (4,), f64, 6), "four ranks, 6 -> 16 features", world_size=4),
    ]


def _row_cases():
    return [
        OnGroup(_row(12, 8, (3,), f32, 1), "one process: the whole layer", world_size=1),
        OnGroup(_row(12, 8, (3,), f32, 2), "two ranks, 6 input features each", world_size=2),
        OnGroup(_row(12, 8, (2, 5), f64, 3), "three ranks, input (B, T, d / N), float64", world_size=3),
        OnGroup(_row(12, 8, (1,), f32, 4), "four ranks, a batch of one", world_size=4),
        OnGroup(_row(12, 8, (3,), f64, 5, "view"), "a non-contiguous input slice (a view), two ranks",
                world_size=2),
        OnGroup(_row(16, 6, (4,), f64, 6), "four ranks, 16 -> 6 features", world_size=4),
    ]


# -- ColumnParallelLinear: mistakes, as candidates write them

class ColumnSplitsColumns(nn.Module):
    """Splits the input features (columns of weight), as a row-parallel layer would."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world_size, dim=1)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x):
        x_shard = x.chunk(dist.get_world_size(), dim=-1)[dist.get_rank()]
        return F.linear(x_shard, self.weight, self.bias)


class ColumnWholeBias(nn.Module):
    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world_size, dim=0)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())
        self.rank, self.world_size = rank, world_size

    def forward(self, x):
        return F.linear(x, self.weight) + self.bias.chunk(self.world_size)[self.rank]


class ColumnStridedRows(nn.Module):
    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach()[rank::world_size].clone())
        self.bias = nn.Parameter(full.bias.detach()[rank::world_size].clone())

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class ColumnGathersOutput(ColumnSpec):
    """Gathers every rank's output features into the full output (Megatron's gather_output=True)."""

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        pieces = [torch.empty_like(y) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, y.detach())
        pieces[dist.get_rank()] = y
        return torch.cat(pieces, dim=-1)


class ColumnBiasOnRankZero(ColumnSpec):
    def forward(self, x):
        y = F.linear(x, self.weight)
        if dist.get_rank() == 0:
            y = y + self.bias
        return y


class ColumnTransposedWeight(nn.Module):
    """Keeps the weight as (in_features, out_features / N) to compute x @ W, not nn.Linear's (out, in)."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().t().chunk(world_size, dim=1)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().chunk(world_size)[rank].clone())

    def forward(self, x):
        return x @ self.weight + self.bias


register(DistributedExercise(
    name="ColumnParallelLinear",
    chapter="distributed/parallelism",
    signature="ColumnParallelLinear(full, rank, world_size); forward(x)",
    oracle=ColumnSpec,
    cases=_column_cases,
    hints=("Y = X A with A split by columns gives rank r the output features Y_r = X A_r with no communication; "
           "nn.Linear stores A transposed as weight (out_features, in_features), so a column of A is a row of "
           "weight   (eq. col-split)",
           "rank r keeps the contiguous block of out_features / world_size rows of full.weight that starts at row "
           "r * out_features / world_size, and the same entries of full.bias, as new nn.Parameter copies",
           "slice rows [r * k, (r + 1) * k) with k = out_features // world_size from full.weight and full.bias "
           "(detach().clone() each) into nn.Parameter `weight` and `bias`; forward is F.linear(x, weight, bias), "
           "no communication   (eq. col-split)"),
    mistakes=[
        Mistake("columns instead of rows", ColumnSplitsColumns,
                "the weight is split along the input features (its columns), as a row-parallel layer does: a "
                "column-parallel layer splits the output features, so keep this rank's rows of full.weight "
                "(out_features / N of them) and the same entries of full.bias"),
        Mistake("whole bias", ColumnWholeBias,
                "the layer keeps the whole bias: each rank owns the bias entries of its own output features, so "
                "keep only this rank's slice of full.bias as the parameter `bias`"),
        Mistake("strided rows", ColumnStridedRows,
                "the rows are taken every N-th (full.weight[rank::N]): rank r must own the contiguous block of "
                "output features [r * out / N, (r + 1) * out / N), the block of input features the row-parallel "
                "layer after it expects"),
        Mistake("gathers the output", ColumnGathersOutput,
                "the output is all-gathered into the full out_features: a column-parallel layer returns this "
                "rank's slice only, which the row-parallel layer after it consumes as it is (gathering it costs a "
                "communication that Megatron's MLP avoids)"),
        Mistake("bias on rank 0 only", ColumnBiasOnRankZero,
                "the bias is added on rank 0 only: in a column-parallel layer every rank adds its own slice of the "
                "bias to its own output features (it is the row-parallel layer that adds its bias once)"),
        Mistake("weight stored transposed", ColumnTransposedWeight,
                "the weight is stored as (in_features, out_features / N) to compute x @ W: keep nn.Linear's layout, "
                "(out_features / N, in_features), and compute F.linear(x, weight, bias)"),
    ],
))


# -- RowParallelLinear: mistakes, as candidates write them

class RowBiasOnEveryRank(RowSpec):
    def forward(self, x_shard):
        y = F.linear(x_shard, self.weight, self.bias)
        total = y.detach().clone()
        dist.all_reduce(total)
        return y + (total - y.detach())


class RowDifferentiableAllReduce(RowSpec):
    def forward(self, x_shard):
        from torch.distributed.nn.functional import all_reduce
        return all_reduce(F.linear(x_shard, self.weight)) + self.bias


class RowNoAllReduce(RowSpec):
    def forward(self, x_shard):
        return F.linear(x_shard, self.weight, self.bias)


class RowSplitsRows(nn.Module):
    """Splits the output features (rows of weight), as a column-parallel layer would, and gathers them."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world_size, dim=0)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x_shard):
        return F.linear(x_shard, self.weight) + self.bias


class RowBiasOnRankZero(RowSpec):
    """Adds the bias into rank 0's partial product before the all-reduce: right values, but the other ranks'
    bias takes no part in the output."""

    def forward(self, x_shard):
        partial = F.linear(x_shard, self.weight)
        if dist.get_rank() == 0:
            partial = partial + self.bias
        total = partial.detach().clone()
        dist.all_reduce(total)
        return partial + (total - partial.detach())


class RowSlicedBias(RowSpec):
    def __init__(self, full, rank, world_size):
        super().__init__(full, rank, world_size)
        self.bias = nn.Parameter(full.bias.detach().chunk(world_size)[rank].clone())

    def forward(self, x_shard):
        partial = F.linear(x_shard, self.weight)
        total = partial.detach().clone()
        dist.all_reduce(total)
        return partial + (total - partial.detach()) + self.bias.repeat(dist.get_world_size())


register(DistributedExercise(
    name="RowParallelLinear",
    chapter="distributed/parallelism",
    signature="RowParallelLinear(full, rank, world_size); forward(x_shard)",
    oracle=RowSpec,
    cases=_row_cases,
    hints=("Z = Y B with B split by rows is a sum of per-rank partial products, Z = sum_r Y_r B_r: one "
           "all-reduce. nn.Linear's weight is B transposed, so rank r keeps a block of columns of full.weight   "
           "(eq. row-split)",
           "every rank computes the same loss, so each already holds the full output's gradient: the backward of "
           "this all-reduce is the identity. Keep the partial product in the autograd graph, add the other ranks' "
           "part as a constant, and add the whole bias once, after the sum   (eq. tp-grad)",
           "partial = F.linear(x_shard, weight); total = a detached copy of partial, all-reduced; return partial + "
           "(total - partial.detach()) + bias   (eqs. row-split, tp-grad)"),
    mistakes=[
        Mistake("bias on every rank", RowBiasOnEveryRank,
                "the bias is added on every rank before the all-reduce, so the output holds it N times: add it "
                "once, after the all-reduce"),
        Mistake("differentiable all-reduce", RowDifferentiableAllReduce,
                "torch.distributed.nn.functional.all_reduce also sums the gradients in backward: every rank "
                "computes the same loss and already holds the full output's gradient, so the weight and input "
                "gradients come out N times too large. The all-reduce of a row-parallel layer passes the "
                "gradient through unchanged"),
        Mistake("no all-reduce", RowNoAllReduce,
                "each rank returns its partial product only: all-reduce the partial products (a sum over the "
                "ranks), then add the bias"),
        Mistake("rows instead of columns", RowSplitsRows,
                "the weight is split along the output features (its rows), as a column-parallel layer does: a "
                "row-parallel layer splits the input features, so keep this rank's columns of full.weight (the ones "
                "that multiply x_shard) and the whole bias"),
        Mistake("bias on rank 0 only", RowBiasOnRankZero,
                "the bias enters the sum on rank 0 only: the output is right, but on the other ranks the bias gets "
                "no gradient and their copies drift apart. Every rank holds the whole bias and adds it after the "
                "all-reduce"),
        Mistake("sliced bias", RowSlicedBias,
                "the bias is sliced as in a column-parallel layer: the output of a row-parallel layer has all "
                "out_features on every rank, so every rank keeps the whole full.bias"),
    ],
))
