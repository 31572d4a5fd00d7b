"""The distributed kind: real gloo groups of 1 to 4 processes run the reader's function on every rank.

Two example declarations mirror CURRICULUM.md Part 14 (`ring_all_reduce(tensor)`, `sync_gradients(model)`),
ready to be copied into utils/grader/exercises/distributed/. The tests prove, for each: correct solutions in
several styles pass; every registered mistake is rejected and named; plausible wrong solutions are rejected
without a false diagnosis; a failure names its rank and the reader's own line; a deadlock is stopped by the
time limit; verdicts repeat; a check stays within 5 s; and no process outlives a check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed import all_reduce as imported_all_reduce

from utils.grader import procgroup
from utils.grader.core import Mistake, evaluate
from utils.grader.kinds.distributed import DistributedExercise, Layer, OnGroup
from utils.grader.result import Status

# =========================================================================== ring_all_reduce(tensor)


def ranked(shape, dtype, seed, transpose=False):
    """Each rank's own tensor, seeded by (seed, rank)."""
    def make(rank, world):
        g = torch.Generator().manual_seed(1000 * seed + rank)
        t = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        return (t.t() if transpose else t,), {}
    return make


def ring_bytes(args, world):
    """A ring sends 2(N-1) chunks of 1/N of the tensor: chunk sizes are numel // N or one more."""
    t = args[0]
    per = 2 * (world - 1) * t.element_size()
    return per * (t.numel() // world), per * -(-t.numel() // world)


def sum_across_ranks(tensor):
    """The oracle: PyTorch's own all-reduce (gloo wants a contiguous buffer)."""
    buf = tensor.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(buf)
    tensor.copy_(buf)


def exchange(send, recv, nxt, prv):
    ops = [dist.P2POp(dist.isend, send, nxt), dist.P2POp(dist.irecv, recv, prv)]
    for work in dist.batch_isend_irecv(ops):
        work.wait()


def ring(tensor, gather_from=1, gather=True, write_back=True):
    """A ring all-reduce, and (through its switches) three classic ways to get it wrong."""
    n, r = dist.get_world_size(), dist.get_rank()
    buf = tensor.reshape(-1).clone()
    chunks = buf.tensor_split(n)
    nxt, prv = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):                                  # reduce-scatter
        i, j = (r - s) % n, (r - s - 1) % n
        incoming = torch.empty_like(chunks[j])
        exchange(chunks[i], incoming, nxt, prv)
        chunks[j].add_(incoming)
    for s in range(n - 1 if gather else 0):                 # all-gather: rank r now owns chunk r + 1
        i, j = (r + gather_from - s) % n, (r + gather_from - 1 - s) % n
        incoming = torch.empty_like(chunks[j])
        exchange(chunks[i], incoming, nxt, prv)
        chunks[j].copy_(incoming)
    if not write_back:
        return buf.view_as(tensor)
    tensor.copy_(buf.view_as(tensor))


def gather_and_broadcast(tensor):
    total = tensor.contiguous()
    if dist.get_rank() == 0:
        buf = torch.empty_like(total)
        for src in range(1, dist.get_world_size()):
            dist.recv(buf, src)
            total = total + buf
        for dst in range(1, dist.get_world_size()):
            dist.send(total, dst)
    else:
        dist.send(total, 0)
        dist.recv(total, 0)
    tensor.copy_(total)


def blocking_recv_first(tensor):
    """Every rank receives before it sends: nobody ever sends, on every case with two ranks or more.
    (Blocking *sends* first deadlock only when gloo cannot buffer the message, so whether they hang depends
    on the size: a registered mistake must behave the same on every run and every machine.)"""
    n, r = dist.get_world_size(), dist.get_rank()
    buf = tensor.reshape(-1).clone()
    chunks = buf.tensor_split(n)
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            i, j = ((r - s) % n, (r - s - 1) % n) if phase == "reduce-scatter" else ((r + 1 - s) % n, (r - s) % n)
            incoming = torch.empty_like(chunks[j])
            dist.recv(incoming, (r - 1) % n)
            dist.send(chunks[i], (r + 1) % n)
            chunks[j].add_(incoming) if phase == "reduce-scatter" else chunks[j].copy_(incoming)
    tensor.copy_(buf.view_as(tensor))


def with_all_reduce(tensor):
    dist.all_reduce(tensor)


RING = DistributedExercise(
    name="ring_all_reduce",
    chapter="distributed/all_reduce",
    signature="ring_all_reduce(tensor)",
    oracle=sum_across_ranks,
    cases=lambda: [
        OnGroup(ranked((7,), torch.float32, 1), "one process: nothing to send", world_size=1),
        OnGroup(ranked((10,), torch.float32, 2), world_size=2),
        OnGroup(ranked((3, 5), torch.float64, 3), "2-D", world_size=2),
        OnGroup(ranked((6, 4), torch.float64, 4, transpose=True), "non-contiguous: write the sum back into it",
                world_size=2),
        OnGroup(ranked((10,), torch.float32, 5), "10 elements over 3 ranks", world_size=3),
        OnGroup(ranked((4, 5), torch.float64, 6), "2-D, 20 elements over 3 ranks", world_size=3),
        OnGroup(ranked((11,), torch.float32, 7), "11 elements over 4 ranks", world_size=4),
        OnGroup(ranked((6, 7), torch.float64, 8), "2-D, 42 elements over 4 ranks", world_size=4),
        OnGroup(ranked((3,), torch.float32, 9), "fewer elements than ranks: one chunk is empty", world_size=4),
    ],
    mistakes=[
        Mistake("gather and broadcast", gather_and_broadcast,
                "every rank sends its whole tensor to rank 0, which sends the sum back: the values are right but "
                "rank 0 sends N-1 whole tensors. In a ring every rank sends 2(N-1) chunks of 1/N of the tensor "
                "to its right neighbour only"),
        Mistake("no all-gather", lambda t: ring(t, gather=False),
                "after the reduce-scatter each rank holds the complete sum of one chunk only: the N-1 all-gather "
                "steps must pass the finished chunks around the ring"),
        Mistake("all-gather from the wrong chunk", lambda t: ring(t, gather_from=0),
                "the all-gather starts from the wrong chunk: after N-1 reduce-scatter steps rank r holds the "
                "complete sum of chunk (r + 1) % N, not chunk r; send that one first"),
        Mistake("returns a new tensor", lambda t: ring(t, write_back=False),
                "the sum is returned as a new tensor, but `tensor` itself is unchanged: all-reduce works in "
                "place (write the result back with tensor.copy_(...)) and returns None"),
        Mistake("uses dist.all_reduce", with_all_reduce,
                "dist.all_reduce is the built-in this exercise asks you to write with send and recv"),
        Mistake("deadlock", blocking_recv_first,     # declared last: a hang stops the group it runs in
                "deadlock: every rank blocks in send (or recv) waiting for its neighbour, which is blocked too. "
                "Post the send and the receive together (dist.isend/dist.irecv, or dist.batch_isend_irecv), or "
                "let even ranks send first and odd ranks receive first"),
    ],
    forbidden=("torch.distributed.all_reduce", "torch.distributed.all_gather", "torch.distributed.reduce_scatter",
               "torch.distributed.broadcast", "torch.distributed.all_to_all", "torch.distributed.reduce",
               "torch.distributed.all_gather_into_tensor", "torch.distributed.reduce_scatter_tensor"),
    traffic=ring_bytes,
    traffic_rule="a ring all-reduce sends 2(N-1) chunks of 1/N of the tensor",
    hint="split a flat copy into N chunks (tensor_split); N-1 steps of reduce-scatter, then N-1 of all-gather, "
         "each step sending one chunk right and receiving one from the left; copy the result back into `tensor`",
)


# -- correct solutions, three styles

def ring_isend(tensor):
    """isend/irecv pairs, waited on."""
    world, rank = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    parts = list(flat.tensor_split(world))
    right, left = (rank + 1) % world, (rank - 1) % world
    for step in range(world - 1):
        send_idx, recv_idx = (rank - step) % world, (rank - step - 1) % world
        got = torch.zeros_like(parts[recv_idx])
        reqs = [dist.isend(parts[send_idx], right), dist.irecv(got, left)]
        for q in reqs:
            q.wait()
        parts[recv_idx] += got
    for step in range(world - 1):
        send_idx, recv_idx = (rank + 1 - step) % world, (rank - step) % world
        got = torch.zeros_like(parts[recv_idx])
        reqs = [dist.isend(parts[send_idx], right), dist.irecv(got, left)]
        for q in reqs:
            q.wait()
        parts[recv_idx].copy_(got)
    tensor.copy_(torch.cat(parts).view(tensor.shape))


def ring_even_odd(tensor):
    """Blocking send and recv, even ranks sending first; equal chunks of a zero-padded buffer."""
    n, r = dist.get_world_size(), dist.get_rank()
    size = -(-tensor.numel() // n)
    padded = torch.zeros(size * n, dtype=tensor.dtype)
    padded[:tensor.numel()] = tensor.reshape(-1)
    chunk = padded.view(n, size)

    def step(send, recv):
        if r % 2 == 0:
            dist.send(send, (r + 1) % n)
            dist.recv(recv, (r - 1) % n)
        else:
            dist.recv(recv, (r - 1) % n)
            dist.send(send, (r + 1) % n)

    recv = torch.empty(size, dtype=tensor.dtype)
    for s in range(n - 1):
        step(chunk[(r - s) % n].clone(), recv)
        chunk[(r - s - 1) % n] += recv
    for s in range(n - 1):
        step(chunk[(r + 1 - s) % n].clone(), recv)
        chunk[(r - s) % n] = recv
    tensor.copy_(padded[:tensor.numel()].view(tensor.shape))
    return tensor          # returning the argument itself, as in-place methods do, is allowed


CORRECT_RINGS = [ring, ring_isend, ring_even_odd]


# -- plausible wrong solutions, not registered

def flatten_and_forget(tensor):
    """flatten() copies a non-contiguous tensor: the sum never reaches `tensor` there."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.flatten()
    chunks = flat.tensor_split(n)
    for s in range(n - 1):
        i, j = (r - s) % n, (r - s - 1) % n
        incoming = torch.empty_like(chunks[j])
        exchange(chunks[i], incoming, (r + 1) % n, (r - 1) % n)
        chunks[j].add_(incoming)
    for s in range(n - 1):
        i, j = (r + 1 - s) % n, (r - s) % n
        incoming = torch.empty_like(chunks[j])
        exchange(chunks[i], incoming, (r + 1) % n, (r - 1) % n)
        chunks[j].copy_(incoming)


def pass_the_whole_tensor(tensor):
    """Right values, but every rank forwards whole tensors around the ring."""
    n, r = dist.get_world_size(), dist.get_rank()
    moving = tensor.clone(memory_format=torch.contiguous_format)
    total = moving.clone()
    for _ in range(n - 1):
        incoming = torch.empty_like(moving)
        exchange(moving, incoming, (r + 1) % n, (r - 1) % n)
        total += incoming
        moving = incoming
    tensor.copy_(total)


def add_into_the_sent_chunk(tensor):
    n, r = dist.get_world_size(), dist.get_rank()
    buf = tensor.reshape(-1).clone()
    chunks = buf.tensor_split(n)
    for s in range(n - 1):
        i, j = (r - s) % n, (r - s - 1) % n
        incoming = torch.empty_like(chunks[j])
        exchange(chunks[i], incoming, (r + 1) % n, (r - 1) % n)
        chunks[i].add_(incoming)                  # should be chunks[j]
    for s in range(n - 1):
        i, j = (r + 1 - s) % n, (r - s) % n
        incoming = torch.empty_like(chunks[j])
        exchange(chunks[i], incoming, (r + 1) % n, (r - 1) % n)
        chunks[j].copy_(incoming)
    tensor.copy_(buf.view_as(tensor))


def reduce_to_rank_zero(tensor):
    """The first half of gather-and-broadcast: only rank 0 ends with the sum."""
    if dist.get_rank() == 0:
        buf = torch.empty_like(tensor)
        for src in range(1, dist.get_world_size()):
            dist.recv(buf, src)
            tensor += buf
    else:
        dist.send(tensor.contiguous(), 0)


def averages(tensor):
    ring(tensor)
    tensor /= dist.get_world_size()


WRONG_RINGS = [flatten_and_forget, pass_the_whole_tensor, add_into_the_sent_chunk, reduce_to_rank_zero, averages]


# =========================================================================== sync_gradients(model)

def small_model(dtype, frozen=False):
    g = torch.Generator().manual_seed(11)
    m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    m = m.to(dtype)
    if frozen:
        m[0].weight.requires_grad_(False)
    return m


def batch(world, dtype, seed, per_rank=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(per_rank * world, 5, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(per_rank * world, 3, generator=g, dtype=torch.float64).to(dtype)
    return x, y


def shard(dtype, seed, frozen=False):
    """The same model on every rank (seeded), backward on this rank's equal shard of one batch."""
    def make(rank, world):
        model = small_model(dtype, frozen)
        x, y = batch(world, dtype, seed)
        F.mse_loss(model(x.chunk(world)[rank]), y.chunk(world)[rank]).backward()
        return (model,), {}
    return make


def average_gradients(model):
    """The oracle: what DistributedDataParallel does, one all-reduce per gradient."""
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def summed(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


def weights_only(model):
    for p in model.parameters():
        if p.grad is not None and p.dim() > 1:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def divided_twice(model):
    for p in model.parameters():
        if p.grad is not None:
            p.grad /= dist.get_world_size()
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


SYNC = DistributedExercise(
    name="sync_gradients",
    chapter="distributed/parallelism",
    signature="sync_gradients(model)",
    oracle=average_gradients,
    cases=lambda: [
        OnGroup(shard(torch.float32, 1), "one process: the gradients stay as they are", world_size=1),
        OnGroup(shard(torch.float32, 2), world_size=2),
        OnGroup(shard(torch.float64, 3), world_size=3),
        OnGroup(shard(torch.float32, 4), world_size=4),
        OnGroup(shard(torch.float64, 5, frozen=True), "a frozen parameter: its .grad stays None", world_size=2),
    ],
    mistakes=[
        Mistake("sum, not mean", summed,
                "the gradients are summed over the ranks but not divided by the world size: one step would be "
                "N times too large (the loss is a mean over the whole batch)"),
        Mistake("some parameters only", weights_only,
                "only some parameters are averaged (here the biases keep this rank's own gradient): loop over "
                "every parameter of model.parameters()"),
        Mistake("divided twice", divided_twice,
                "the gradients are divided by the world size twice (before and after the all-reduce)"),
    ],
    hint="for every parameter with a gradient: dist.all_reduce(p.grad), then divide by dist.get_world_size()",
)


def sync_bucketed(model):
    """One all-reduce over a flat buffer of every gradient, as DDP's buckets do."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, piece in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(piece.view_as(g))


def sync_all_gather(model):
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is None:
            continue
        everyone = [torch.empty_like(p.grad) for _ in range(world)]
        dist.all_gather(everyone, p.grad)
        p.grad = torch.stack(everyone).mean(0)


def sync_with_ring(model):
    """The chapter's own ring, reused."""
    for p in model.parameters():
        if p.grad is not None:
            ring(p.grad)
            p.grad.div_(dist.get_world_size())


CORRECT_SYNCS = [average_gradients, sync_bucketed, sync_all_gather, sync_with_ring]


def averages_parameters(model):
    for p in model.parameters():
        dist.all_reduce(p.data)
        p.data /= dist.get_world_size()


def reduce_to_rank_zero_only(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.reduce(p.grad, dst=0)
            p.grad /= dist.get_world_size()


def divide_without_communicating(model):
    for p in model.parameters():
        if p.grad is not None:
            p.grad /= dist.get_world_size()


WRONG_SYNCS = [averages_parameters, reduce_to_rank_zero_only, divide_without_communicating]


# =========================================================================== Column/RowParallelLinear(full, ...)

def full_layer(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    full = nn.Linear(8, 12).to(dtype)
    with torch.no_grad():
        for p in full.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(3, 8, generator=g, dtype=torch.float64).to(dtype)
    return full, x


def column_case(dtype, seed):
    def make(rank, world):
        full, x = full_layer(dtype, seed)
        return Layer(((full, rank, world), {}), ((x,), {}), input_grad=False)   # the input gradient is partial
    return make


def row_case(dtype, seed):
    def make(rank, world):
        full, x = full_layer(dtype, seed)
        return Layer(((full, rank, world), {}), ((x.tensor_split(world, dim=-1)[rank].contiguous(),), {}))
    return make


class ColumnOracle(nn.Module):
    """This rank's rows of the weight and the bias: F.linear on them gives this rank's output features."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        rows = slice(rank * full.out_features // world_size, (rank + 1) * full.out_features // world_size)
        self.weight = nn.Parameter(full.weight.detach()[rows].clone())
        self.bias = nn.Parameter(full.bias.detach()[rows].clone())

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class RowOracle(nn.Module):
    """This rank's columns of the weight and the whole bias: partial products all-reduced (identity backward)."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        cols = slice(rank * full.in_features // world_size, (rank + 1) * full.in_features // world_size)
        self.weight = nn.Parameter(full.weight.detach()[:, cols].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x_shard):
        partial = x_shard @ self.weight.t()
        total = partial.detach().clone()
        dist.all_reduce(total)
        return partial + (total - partial.detach()) + self.bias


class ColumnSplitsColumns(ColumnOracle):
    def __init__(self, full, rank, world_size):
        nn.Module.__init__(self)
        cols = full.weight.tensor_split(world_size, dim=1)[rank]
        self.weight = nn.Parameter(cols.detach().clone())
        self.bias = nn.Parameter(full.bias.detach().clone())


class ColumnFullBias(ColumnOracle):
    def __init__(self, full, rank, world_size):
        super().__init__(full, rank, world_size)
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x):
        return F.linear(x, self.weight) + self.bias.tensor_split(dist.get_world_size())[dist.get_rank()]


class RowBiasOnEveryRank(RowOracle):
    def forward(self, x_shard):
        out = x_shard @ self.weight.t() + self.bias
        total = out.detach().clone()
        dist.all_reduce(total)
        return out + (total - out.detach())


class RowDifferentiableAllReduce(RowOracle):
    def forward(self, x_shard):
        import torch.distributed.nn.functional as dnn
        return dnn.all_reduce(x_shard @ self.weight.t()) + self.bias


class RowNoAllReduce(RowOracle):
    def forward(self, x_shard):
        return x_shard @ self.weight.t() + self.bias


COLUMN = DistributedExercise(
    name="ColumnParallelLinear",
    chapter="distributed/parallelism",
    signature="ColumnParallelLinear(full, rank, world_size)",
    oracle=ColumnOracle,
    cases=lambda: [OnGroup(column_case(torch.float32, 1), world_size=1),
                   OnGroup(column_case(torch.float32, 2), world_size=2),
                   OnGroup(column_case(torch.float64, 3), world_size=4)],
    mistakes=[Mistake("columns instead of rows", ColumnSplitsColumns,
                      "the weight is split along the input features (columns); a column-parallel layer splits the "
                      "output features: this rank's rows of full.weight, and the same rows of full.bias"),
              Mistake("whole bias", ColumnFullBias,
                      "the layer keeps the whole bias: hold only this rank's slice of full.bias as `bias`")],
)

ROW = DistributedExercise(
    name="RowParallelLinear",
    chapter="distributed/parallelism",
    signature="RowParallelLinear(full, rank, world_size)",
    oracle=RowOracle,
    cases=lambda: [OnGroup(row_case(torch.float32, 1), world_size=1),
                   OnGroup(row_case(torch.float32, 2), world_size=2),
                   OnGroup(row_case(torch.float64, 3), world_size=4)],
    mistakes=[Mistake("bias on every rank", RowBiasOnEveryRank,
                      "the bias is added on every rank before the all-reduce, so the output holds it N times: add "
                      "it once, after the all-reduce"),
              Mistake("differentiable all-reduce", RowDifferentiableAllReduce,
                      "torch.distributed.nn.functional.all_reduce also sums the gradients in backward: with the "
                      "same loss on every rank the weight gradients come out N times too large. The all-reduce of "
                      "a row-parallel layer passes the gradient through unchanged"),
              Mistake("no all-reduce", RowNoAllReduce,
                      "each rank returns its partial product only: all-reduce the partial products (then add the "
                      "bias)")],
)


class ColumnByChunk(nn.Module):
    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world_size)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().chunk(world_size)[rank].clone())

    def forward(self, x):
        return x @ self.weight.T + self.bias


class RowWithAutogradFunction(nn.Module):
    class _Reduce(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            t = t.clone()
            dist.all_reduce(t)
            return t

        @staticmethod
        def backward(ctx, g):
            return g

    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world_size, dim=1)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x_shard):
        return self._Reduce.apply(F.linear(x_shard, self.weight)) + self.bias


class RowDetached(RowOracle):
    """All-reduces a detached copy and returns it: right values, no gradients."""

    def forward(self, x_shard):
        total = (x_shard @ self.weight.t()).detach()
        dist.all_reduce(total)
        return total + self.bias.detach()


# =========================================================================== tests

def children() -> set:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(autouse=True)
def no_process_survives():
    """Every test of this file: the children before and after are the same."""
    before = children()
    yield
    assert children() == before


@pytest.mark.parametrize("impl", CORRECT_RINGS, ids=lambda f: f.__name__)
def test_correct_rings_pass(impl):
    report = evaluate(RING, impl)
    assert report.passed, str(report)
    assert report.seconds < 5


@pytest.mark.parametrize("mistake", RING.mistakes, ids=lambda m: m.name)
def test_every_ring_mistake_is_rejected_and_named(mistake):
    report = evaluate(RING, mistake.impl)
    assert not report.passed
    assert report.failure.mistake == mistake.name, str(report)


@pytest.mark.parametrize("impl", WRONG_RINGS, ids=lambda f: f.__name__)
def test_plausible_wrong_rings_are_rejected_without_a_false_diagnosis(impl):
    report = evaluate(RING, impl)
    assert not report.passed
    assert report.failure.mistake is None, str(report)


def test_gather_and_broadcast_is_named_by_its_traffic():
    def naive(tensor):                       # the reader's own, written differently from the mistake
        world = dist.get_world_size()
        out = tensor.contiguous().clone()
        if dist.get_rank() == 0:
            others = [torch.empty_like(out) for _ in range(world - 1)]
            for src, buf in enumerate(others, 1):
                dist.recv(buf, src=src)
            out = out + sum(others) if others else out
            for dst in range(1, world):
                dist.send(out, dst=dst)
        else:
            dist.send(out, dst=0)
            dist.recv(out, src=0)
        tensor.copy_(out)

    report = evaluate(RING, naive)
    assert report.kind == "traffic" and report.failure.mistake == "gather and broadcast", str(report)
    message = report.failure.problem.message
    assert message.startswith("rank 0 of 3 sent 80 bytes") and "48 to 64 bytes" in message


def test_an_exception_names_its_rank_and_the_readers_line():
    def ring_all_reduce(tensor):
        if dist.get_rank() == 2:
            raise ValueError("chunk index out of range")   # the reader's bug
        ring(tensor)

    report = evaluate(RING, ring_all_reduce)
    assert report.kind == "exception"
    assert report.failure.problem.message == ("your code raised ValueError (rank 2 of 3): chunk index out of "
                                              "range")
    assert "raise ValueError" in report.failure.frame and "in ring_all_reduce" in report.failure.frame
    assert "utils/grader" not in str(report)


def test_a_deadlock_is_stopped_and_every_rank_shown():
    def ring_all_reduce(tensor):              # receive first on every rank: nobody ever sends
        n, r = dist.get_world_size(), dist.get_rank()
        if n == 1:
            return
        incoming = torch.empty_like(tensor)
        dist.recv(incoming, (r - 1) % n)
        dist.send(tensor.contiguous(), (r + 1) % n)
        tensor += incoming

    start = time.perf_counter()
    report = evaluate(RING, ring_all_reduce)
    assert time.perf_counter() - start < 5
    assert report.kind == "timeout" and report.failure.mistake == "deadlock", str(report)
    assert "rank 0 was waiting for a message at line" in report.failure.call
    assert "rank 1 was waiting for a message at line" in report.failure.call
    assert "a deadlock" in report.failure.call
    assert "dist.recv(incoming" in report.failure.frame


def test_a_message_never_sent_is_stopped():
    def ring_all_reduce(tensor):
        if dist.get_rank() == 0 and dist.get_world_size() > 1:
            dist.recv(tensor, 1)              # rank 1 never sends

    report = evaluate(RING, ring_all_reduce)
    assert report.kind == "timeout" and report.failure.mistake is None, str(report)
    assert "rank 0 was waiting for a message" in report.failure.call and "rank 1 had returned" in report.failure.call
    assert "never sent" in report.failure.call


def test_an_endless_loop_is_stopped():
    def ring_all_reduce(tensor):
        while True:
            pass

    report = evaluate(RING, ring_all_reduce)
    assert report.kind == "timeout"
    assert "rank 0 was still running" in report.failure.call
    assert "while True" in report.failure.frame


def test_forbidden_collectives_are_caught_in_every_rank():
    def gathers(tensor):
        everyone = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(everyone, tensor)
        tensor.copy_(sum(everyone))

    report = evaluate(RING, gathers)
    assert report.kind == "forbidden-call" and "torch.distributed.all_gather" in report.failure.problem.message
    assert report.failure.mistake is None
    report = evaluate(RING, lambda t: imported_all_reduce(t))     # imported before the check: caught all the same
    assert report.kind == "forbidden-call" and "torch.distributed.all_reduce" in report.failure.problem.message


def test_bad_returns_and_targets():
    def returns_numpy(tensor):
        ring(tensor)
        return tensor.numpy()

    report = evaluate(RING, returns_numpy)
    assert report.kind == "wrong-value" and "numpy.ndarray" in report.failure.problem.message
    report = evaluate(RING, lambda t: None)
    assert report.kind == "wrong-value" and report.failure.case == 1    # one process: doing nothing is right
    report = evaluate(RING, 42)
    assert report.kind == "wrong-type"

    def stub(tensor):
        raise NotImplementedError("write ring_all_reduce")

    assert evaluate(RING, stub).status is Status.NOT_ATTEMPTED


def test_verdicts_are_identical_when_run_twice():
    for impl in (averages, gather_and_broadcast):
        first, second = evaluate(RING, impl), evaluate(RING, impl)
        assert (first.status, first.kind, first.diagnosis) == (second.status, second.kind, second.diagnosis)
        assert str(first).split("\n")[1:] == str(second).split("\n")[1:] or first.passed


def test_what_a_rank_prints_is_shown(capsys):
    def ring_all_reduce(tensor):
        print("hello from", dist.get_rank())
        ring(tensor)

    assert evaluate(RING, ring_all_reduce).passed
    out = capsys.readouterr().out
    assert "[rank 2] hello from 2" in out


def test_forking_after_the_parent_used_several_threads():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = torch.randn(512, 512)
        (x @ x).exp().sum()                   # the parent's OpenMP pool is now active
        assert evaluate(RING, ring_isend).passed
    finally:
        torch.set_num_threads(threads)


# -- sync_gradients

@pytest.mark.parametrize("impl", CORRECT_SYNCS, ids=lambda f: f.__name__)
def test_correct_syncs_pass(impl):
    report = evaluate(SYNC, impl)
    assert report.passed, str(report)


@pytest.mark.parametrize("mistake", SYNC.mistakes, ids=lambda m: m.name)
def test_every_sync_mistake_is_rejected_and_named(mistake):
    report = evaluate(SYNC, mistake.impl)
    assert report.failure.mistake == mistake.name, str(report)


@pytest.mark.parametrize("impl", WRONG_SYNCS, ids=lambda f: f.__name__)
def test_plausible_wrong_syncs_are_rejected_without_a_false_diagnosis(impl):
    report = evaluate(SYNC, impl)
    assert not report.passed
    assert report.failure.mistake is None, str(report)


def test_sync_expects_the_full_batch_gradient():
    """The declaration is right: the averaged gradients equal one process's gradients on the whole batch."""
    for i, case in enumerate(SYNC.all_cases()):
        world, dtype = case.world_size, case.make(0, 1)[0][0][0].weight.dtype
        model = small_model(dtype, frozen="frozen" in case.note)
        x, y = batch(world, dtype, seed=i + 1)
        F.mse_loss(model(x), y).backward()
        parts = dict(SYNC.expected(i).parts)
        for rank in range(world):
            for name, p in model.named_parameters():
                got = parts[f"rank {rank} of {world}: gradient of model.{name}"]
                assert (got is None) if p.grad is None else torch.allclose(got, p.grad, rtol=1e-5, atol=1e-6)


def test_a_crash_on_a_frozen_parameter_is_reported():
    def sync_gradients(model):
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()

    report = evaluate(SYNC, sync_gradients)
    assert report.kind == "exception" and report.failure.case == 4
    assert "(rank 0 of 2)" in report.failure.problem.message and "dist.all_reduce(p.grad)" in report.failure.frame


def test_changing_the_parameters_is_named():
    def sync_and_step(model):                 # right gradients, but the optimizer step is taken here too
        average_gradients(model)
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad

    report = evaluate(SYNC, sync_and_step)
    assert report.kind == "mutated-input" and report.failure.case == 0, str(report)
    assert report.failure.problem.message == ("rank 0 of 1: your code changed the values of model.0.weight; only "
                                              "the gradients should change")


# -- the process group runner

def test_bytes_sent_are_counted_per_rank():
    def fn(rank, world, item):
        t = torch.zeros(10)
        if rank == 0:
            dist.send(t, 1)
            dist.isend(t, 1).wait()
            ops = [dist.P2POp(dist.isend, t[:5].clone(), 1), dist.P2POp(dist.irecv, t, 1)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
        else:
            dist.recv(t, 0)
            dist.recv(t, 0)
            small = torch.zeros(5)
            ops = [dist.P2POp(dist.irecv, small, 0), dist.P2POp(dist.isend, torch.zeros(3, dtype=torch.float64), 0)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
        return procgroup.RankResult("ok", procgroup.SENT["bytes"])

    results = procgroup.run_groups(fn, {2: [0]}, seconds=2.0)
    assert [r.value for r in results[2][0]] == [40 + 40 + 20, 24]


def test_no_process_survives_a_failure_in_the_parent(monkeypatch):
    def fn(rank, world, item):
        time.sleep(0.2)
        return procgroup.RankResult("ok")

    def broken(*args):
        raise KeyboardInterrupt

    before = children()
    monkeypatch.setattr(procgroup, "_advance", broken)
    with pytest.raises(KeyboardInterrupt):
        procgroup.run_groups(fn, {1: [0], 2: [0], 3: [0]}, seconds=1.0)
    assert children() == before


def test_no_process_survives_a_hang_or_a_silent_rank():
    def fn(rank, world, item):
        if rank == 1:
            time.sleep(60)                    # in C: neither the time limit nor gloo can stop it
        return procgroup.RankResult("ok")

    before = children()
    start = time.perf_counter()
    results = procgroup.run_groups(fn, {2: [0, 1]}, seconds=0.5)
    assert time.perf_counter() - start < 3
    assert [r.status for r in results[2][0]] == ["ok", "silent"] and len(results[2]) == 1
    assert children() == before


def test_a_cold_check_stays_within_five_seconds():
    """In a fresh interpreter (as in a fresh kernel): a passing check, then a deadlock with its diagnosis."""
    script = f"""
import time, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_kind_distributed import RING, ring_isend, blocking_recv_first, evaluate
def mine(tensor):
    return blocking_recv_first(tensor)
for impl in (ring_isend, mine, mine):
    start = time.perf_counter()
    report = evaluate(RING, impl)
    print(f"{{time.perf_counter() - start:.2f}}", report.failure.mistake if report.failure else "passed")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parent.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.strip().splitlines()]
    assert [w for _, w in lines] == ["passed", "deadlock", "deadlock"]
    print("cold pass, cold deadlock (diagnosed), warm deadlock:", [t for t, _ in lines])
    assert all(float(t) < 5 for t, _ in lines), lines


# -- tensor-parallel layers

@pytest.mark.parametrize("ex, impl", [(COLUMN, ColumnOracle), (COLUMN, ColumnByChunk), (ROW, RowOracle),
                                      (ROW, RowWithAutogradFunction)], ids=lambda v: getattr(v, "__name__", ""))
def test_correct_layers_pass(ex, impl):
    report = evaluate(ex, impl)
    assert report.passed, str(report)


@pytest.mark.parametrize("ex, mistake", [(ex, m) for ex in (COLUMN, ROW) for m in ex.mistakes],
                         ids=lambda v: getattr(v, "name", ""))
def test_every_layer_mistake_is_rejected_and_named(ex, mistake):
    report = evaluate(ex, mistake.impl)
    assert report.failure.mistake == mistake.name, str(report)


def test_a_layer_cut_from_the_graph_is_rejected():
    report = evaluate(ROW, RowDetached)
    assert report.kind == "no-grad" and report.failure.mistake is None, str(report)
