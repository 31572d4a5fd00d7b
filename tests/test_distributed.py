"""Part 14, distributed training: the ring_all_reduce, sync_gradients, ColumnParallelLinear and RowParallelLinear
graders (utils/grader/exercises/distributed/) and the chapters distributed/all_reduce and distributed/parallelism.

The oracles are checked against the field's references on real gloo groups: the sum computed in this process from
every rank's inputs, single-process training on the whole batch, PyTorch's DistributedDataParallel, and nn.Linear /
a full MLP for the tensor-parallel layers; the traffic bound against an exact count of a tensor_split ring. Wrong
solutions written as candidates write them are rejected (without a false diagnosis), correct ones in other styles
pass, bad input gets a clear report, and no process outlives a test.
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

from utils.grader import get
from utils.grader.core import evaluate
from utils.grader.exercises.distributed import all_reduce as AR
from utils.grader.exercises.distributed import parallelism as PAR
from utils.grader.procgroup import RankResult, run_groups
from utils.grader.result import Status
from utils.i18n import catalog, english_left, speaking

RING, SYNC, COLUMN, ROW = (get(n) for n in ("ring_all_reduce", "sync_gradients", "ColumnParallelLinear",
                                             "RowParallelLinear"))
EXERCISES = (RING, SYNC, COLUMN, ROW)


def children() -> set:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(autouse=True)
def no_process_survives():
    """Every test of this file: the child processes before and after are the same."""
    before = children()
    yield
    assert children() == before


def on_groups(fn, worlds, seconds=10.0) -> dict:
    """{world: [value of rank 0, ..., value of rank N-1]} of fn(rank, world) on one fresh group per world size."""
    def rank_main(rank, world, item):
        return RankResult("ok", fn(rank, world))
    results = run_groups(rank_main, {w: [0] for w in worlds}, seconds)
    out = {}
    for w, items in results.items():
        for r, res in enumerate(items[0]):
            assert res.status == "ok", f"rank {r} of {w}: {res.status} {res.error.message if res.error else ''}"
        out[w] = [res.value for res in items[0]]
    return out


def passes(ex, impl):
    report = evaluate(ex, impl)
    assert report.passed, str(report)


def rejected(ex, impl, allowed=(None,)):
    """Rejected, and diagnosed as nothing or as one of `allowed` (a mistake with the very same outcome)."""
    report = evaluate(ex, impl)
    assert not report.passed, f"{getattr(impl, '__name__', impl)} passes"
    assert report.failure.mistake in allowed, str(report)
    return report


# =========================================================================== the declarations, as data

def test_every_exercise_has_at_least_five_mistakes_and_five_cases():
    for ex in EXERCISES:
        assert len(ex.mistakes) >= 5 and len(ex.all_cases()) >= 5, ex.name
        assert len(ex.ladder()) >= 3, ex.name


def test_the_cases_cover_the_issue():
    worlds = {c.world_size for c in RING.all_cases()}
    assert worlds == {1, 2, 3, 4}
    made = [(c.world_size, c.make(0, c.world_size)[0][0]) for c in RING.all_cases()]
    assert any(t.numel() % w for w, t in made), "a size the world size does not divide"
    assert any(t.numel() < w for w, t in made), "fewer elements than ranks"
    assert {t.dtype for _, t in made} == {torch.float32, torch.float64}
    assert any(not t.is_contiguous() for _, t in made) and any(t.dim() == 0 for _, t in made)
    for ex in (SYNC, COLUMN, ROW):
        assert {c.world_size for c in ex.all_cases()} == {1, 2, 3, 4}, ex.name
    notes = " ".join(c.note for c in SYNC.all_cases())
    assert "frozen" in notes and "not contiguous" in notes
    layers = [c.make(1, c.world_size) for ex in (COLUMN, ROW) for c in ex.all_cases() if c.world_size > 1]
    assert any(not m.inputs[0][0].is_contiguous() for m in layers)
    assert {m.inputs[0][0].dtype for m in layers} == {torch.float32, torch.float64}
    assert any(m.inputs[0][0].shape[0] == 1 for m in layers), "a batch of one"


def test_the_full_layers_have_random_non_default_weights():
    full, _ = PAR._full(8, 12, torch.float64, 1)
    default = nn.Linear(8, 12)
    assert full.weight.abs().max() > 1 / 8 ** 0.5        # nn.Linear's default init is bounded by 1/sqrt(in)
    assert full.bias.abs().max() > default.bias.abs().max()


def test_every_message_of_the_declarations_has_chinese():
    cat = catalog("zh")
    for ex in EXERCISES:
        texts = [c.note for c in ex.all_cases()] + [m.message for m in ex.mistakes] + list(ex.ladder())
        texts += [ex.traffic_rule] if ex.traffic_rule else []
        missing = [t for t in texts if t and t not in cat]
        assert not missing, f"{ex.name}: {missing}"


# =========================================================================== oracles against the references

def test_the_ring_oracle_is_the_sum_of_every_ranks_tensor():
    """dist.all_reduce (the oracle) against the sum of every rank's inputs, computed here, case by case."""
    cases = RING.all_cases()
    for i, case in enumerate(cases):
        expected = RING.expected(i)
        world = case.world_size
        total = sum(case.make(r, world)[0][0].double() for r in range(world))
        for r in range(world):
            got = dict(expected.parts)[f"rank {r} of {world}: `tensor` after the call"]
            assert got.dtype == case.make(r, world)[0][0].dtype
            tol = 1e-6 if got.dtype == torch.float32 else 1e-12
            torch.testing.assert_close(got.double(), total, rtol=tol, atol=tol)


@pytest.mark.parametrize("numel", [0, 1, 3, 7, 10, 11, 12, 42, 1003])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 5, 8])
def test_the_traffic_bound_holds_for_an_exact_count_of_a_tensor_split_ring(numel, world):
    """A tensor_split ring: rank r sends every chunk but (r + 1) in the reduce-scatter and every chunk but (r + 2)
    in the all-gather, exactly; the declared bound contains it, and pads to equal chunks at most."""
    t = torch.zeros(numel)
    low, high = AR.ring_traffic((t,), world)
    sizes = [len(c) for c in t.tensor_split(world)]
    for r in range(world):
        if world == 1:
            sent = 0
        else:
            sent = sum(sizes) - sizes[(r + 1) % world] + sum(sizes) - sizes[(r + 2) % world]
        assert low <= 4 * sent <= high
    assert high == 2 * (world - 1) * 4 * -(-numel // world)              # equal chunks padded to the ceiling


def test_the_traffic_bound_by_hand():
    assert AR.ring_traffic((torch.zeros(10),), 3) == (48, 64)            # 4 steps of 3 or 4 float32 numbers
    assert AR.ring_traffic((torch.zeros(12, dtype=torch.float64),), 4) == (144, 144)
    assert AR.ring_traffic((torch.zeros(7),), 1) == (0, 0)


def test_gloo_all_reduce_sends_what_a_ring_sends():
    """The chapter's claim: dist.all_reduce (gloo) writes 2(N-1)/N of the tensor per rank to its sockets."""
    def written(rank, world):
        with open("/proc/self/io") as f:
            before = next(int(line.split()[1]) for line in f if line.startswith("wchar"))
        dist.all_reduce(torch.ones(2**18))
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar")) - before
    if not Path("/proc/self/io").exists():
        pytest.skip("Linux only")
    for world, values in on_groups(written, (2, 4)).items():
        for sent in values:
            assert abs(sent / 2**20 - 2 * (world - 1) / world) < 0.01


def test_gloo_blocking_send_waits_for_the_receive():
    """Why "everyone sends first" is a deterministic deadlock here: a blocking send returns only when the receive
    is posted, however small the message."""
    def timing(rank, world):
        t = torch.ones(1)
        dist.barrier()
        start = time.perf_counter()
        if rank == 0:
            dist.send(t, 1)
        else:
            time.sleep(0.3)
            dist.recv(t, 0)
        return time.perf_counter() - start
    assert on_groups(timing, (2,))[2][0] >= 0.25


def test_the_sync_oracle_equals_one_process_on_the_whole_batch():
    for i, case in enumerate(SYNC.all_cases()):
        world = case.world_size
        kind = next((k for k, word in (("frozen", "frozen"), ("norm", "LayerNorm"), ("transposed", "transposed"))
                     if word in case.note), "mlp")
        per_rank = 1 if "one example" in case.note else 3
        model = case.make(0, world)[0][0]
        dtype = next(model.parameters()).dtype
        whole = PAR._model(dtype, kind)
        x, y = PAR._batch(world, dtype, seed=i + 1, per_rank=per_rank)
        F.mse_loss(whole(x), y).backward()
        parts = dict(SYNC.expected(i).parts)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        for r in range(world):
            for name, p in whole.named_parameters():
                got = parts[f"rank {r} of {world}: gradient of model.{name}"]
                if p.grad is None:
                    assert got is None
                else:
                    torch.testing.assert_close(got, p.grad, rtol=tol, atol=tol)


def test_the_sync_oracle_equals_distributed_data_parallel():
    """PyTorch's DDP on the same shards gives the oracle's gradients (DDP imports torch._dynamo: once, here)."""
    import torch._dynamo  # noqa: F401

    def both(rank, world):
        model = PAR._model(torch.float64, "norm")
        copy = PAR._model(torch.float64, "norm")
        x, y = PAR._batch(world, torch.float64, seed=3)
        F.mse_loss(model(x.chunk(world)[rank]), y.chunk(world)[rank]).backward()
        PAR.average_gradients(model)
        ddp = nn.parallel.DistributedDataParallel(copy)
        F.mse_loss(ddp(x.chunk(world)[rank]), y.chunk(world)[rank]).backward()
        return [(p.grad, q.grad) for p, q in zip(model.parameters(), copy.parameters())]
    for values in on_groups(both, (2, 3)).values():
        for grads in values:
            for ours, theirs in grads:
                torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_column_then_row_oracles_equal_the_full_mlp_on_every_rank():
    """ColumnSpec, GELU, RowSpec on N ranks against nn.Linear, GELU, nn.Linear here: outputs, and every shard's
    gradient against the matching slice of the full layers' gradients."""
    def mlp(seed):
        up, _ = PAR._full(8, 16, torch.float64, seed)
        down, g = PAR._full(16, 8, torch.float64, seed + 1)
        return up, down, torch.randn(5, 8, generator=g, dtype=torch.float64)

    def sharded(rank, world):
        up, down, x = mlp(7)
        column, row = PAR.ColumnSpec(up, rank, world), PAR.RowSpec(down, rank, world)
        z = row(F.gelu(column(x)))
        z.pow(2).sum().backward()
        return z.detach(), column.weight.grad, column.bias.grad, row.weight.grad, row.bias.grad

    up, down, x = mlp(7)
    z = down(F.gelu(up(x)))
    z.pow(2).sum().backward()
    for world, values in on_groups(sharded, (1, 2, 4)).items():
        for r, (z_r, gw1, gb1, gw2, gb2) in enumerate(values):
            torch.testing.assert_close(z_r, z.detach())
            torch.testing.assert_close(gw1, up.weight.grad.chunk(world, 0)[r])
            torch.testing.assert_close(gb1, up.bias.grad.chunk(world, 0)[r])
            torch.testing.assert_close(gw2, down.weight.grad.chunk(world, 1)[r])
            torch.testing.assert_close(gb2, down.bias.grad)


def test_the_layer_oracles_match_nn_linear_case_by_case():
    for ex, split in ((COLUMN, 0), (ROW, 1)):
        for i, case in enumerate(ex.all_cases()):
            world = case.world_size
            parts = dict(ex.expected(i).parts)
            outputs = []
            for r in range(world):
                made = case.make(r, world)
                full = made.init[0][0]
                x = made.inputs[0][0]
                out = parts[f"rank {r} of {world}: output"]
                if split == 0:
                    ref = F.linear(x, full.weight.chunk(world, 0)[r], full.bias.chunk(world, 0)[r])
                else:
                    whole = torch.cat([case.make(q, world).inputs[0][0] for q in range(world)], dim=-1)
                    ref = full(whole)
                torch.testing.assert_close(out, ref.detach())
                outputs.append(out)
            if split == 0:           # the column slices side by side are the full layer's output
                torch.testing.assert_close(torch.cat(outputs, -1), full(case.make(0, world).inputs[0][0]).detach())


# =========================================================================== the book's solutions

def test_the_books_ring_matches_dist_all_reduce_on_larger_tensors(book):
    ring_all_reduce = book("distributed/all_reduce")["ring_all_reduce"]

    def compare(rank, world):
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(3, 1001, generator=g, dtype=torch.float64)[:, ::3]     # non-contiguous, 1002 numbers
        mine, theirs = x.clone(), x.clone()
        ring_all_reduce(mine)
        dist.all_reduce(theirs)
        return (mine - theirs).abs().max().item()
    for values in on_groups(compare, (2, 3, 4, 5)).values():
        assert max(values) < 1e-12


def test_the_books_layers_compose_into_the_full_mlp(book):
    ns = book("distributed/parallelism")
    Column, Row = ns["ColumnParallelLinear"], ns["RowParallelLinear"]

    def sharded(rank, world):
        up, _ = PAR._full(6, 12, torch.float32, 3)
        down, g = PAR._full(12, 6, torch.float32, 4)
        x = torch.randn(2, 3, 6, generator=g)
        z = Row(down, rank, world)(F.gelu(Column(up, rank, world)(x)))
        return z.detach()

    up, _ = PAR._full(6, 12, torch.float32, 3)
    down, g = PAR._full(12, 6, torch.float32, 4)
    z = down(F.gelu(up(torch.randn(2, 3, 6, generator=g)))).detach()
    for values in on_groups(sharded, (1, 2, 3)).values():
        for z_r in values:
            torch.testing.assert_close(z_r, z)


def test_the_books_sync_trains_as_one_process_on_the_whole_batch(book):
    """Three SGD steps (written out: torch.optim's first step imports torch._dynamo, seconds in every rank)."""
    sync_gradients = book("distributed/parallelism")["sync_gradients"]

    def sgd(model, batch_of_this_rank):
        for step in range(3):
            x, y = batch_of_this_rank(step)
            model.zero_grad()
            F.mse_loss(model(x), y).backward()
            if dist.is_initialized():
                sync_gradients(model)
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
        return [p.detach() for p in model.parameters()]

    def train(rank, world):
        def shard(step):
            x, y = PAR._batch(world, torch.float64, seed=step)
            return x.chunk(world)[rank], y.chunk(world)[rank]
        return sgd(PAR._model(torch.float64, "norm"), shard)

    for world, values in on_groups(train, (2, 4)).items():
        alone = sgd(PAR._model(torch.float64, "norm"), lambda step: PAR._batch(world, torch.float64, seed=step))
        for weights in values:
            for a, b in zip(weights, alone):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# =========================================================================== correct solutions in other styles

def ring_batched(tensor):
    """batch_isend_irecv, flat buffer written back by slicing."""
    n, r = dist.get_world_size(), dist.get_rank()
    buf = tensor.detach().reshape(-1).clone()
    bounds = [0]
    for c in buf.tensor_split(n):
        bounds.append(bounds[-1] + c.numel())
    piece = lambda i: buf[bounds[i % n]:bounds[i % n + 1]]          # noqa: E731
    for phase in range(2):
        for s in range(n - 1):
            out_i, in_i = (r - s + phase) % n, (r - s - 1 + phase) % n
            incoming = torch.empty_like(piece(in_i))
            ops = [dist.P2POp(dist.isend, piece(out_i).clone(), (r + 1) % n),
                   dist.P2POp(dist.irecv, incoming, (r - 1) % n)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
            if phase == 0:
                piece(in_i).add_(incoming)
            else:
                piece(in_i).copy_(incoming)
    tensor.copy_(buf.view(tensor.shape))


def ring_padded_parity(tensor):
    """Equal chunks of a zero-padded buffer; blocking send and recv, even ranks sending first."""
    n, r = dist.get_world_size(), dist.get_rank()
    size = -(-tensor.numel() // n)
    padded = torch.zeros(n * size, dtype=tensor.dtype)
    padded[:tensor.numel()] = tensor.reshape(-1)
    rows = padded.view(n, size)
    incoming = torch.empty(size, dtype=tensor.dtype)

    def exchange(outgoing):
        if r % 2 == 0:
            dist.send(outgoing, (r + 1) % n)
            dist.recv(incoming, (r - 1) % n)
        else:
            dist.recv(incoming, (r - 1) % n)
            dist.send(outgoing, (r + 1) % n)

    for s in range(n - 1):
        exchange(rows[(r - s) % n].clone())
        rows[(r - s - 1) % n] += incoming
    for s in range(n - 1):
        exchange(rows[(r + 1 - s) % n].clone())
        rows[(r - s) % n] = incoming
    tensor.copy_(padded[:tensor.numel()].view(tensor.shape))
    return tensor                       # returning the argument itself, as in-place methods do, is allowed


def ring_recursive_views(tensor):
    """A ring over Python lists of chunk copies, concatenated at the end."""
    n, r = dist.get_world_size(), dist.get_rank()
    chunks = [c.clone() for c in tensor.reshape(-1).tensor_split(n)]
    for s in range(2 * (n - 1)):
        gather = s >= n - 1
        k = s - (n - 1) if gather else s
        send_i = (r + 1 - k) % n if gather else (r - k) % n
        recv_i = (r - k) % n if gather else (r - k - 1) % n
        got = torch.zeros_like(chunks[recv_i])
        reqs = [dist.irecv(got, (r - 1) % n), dist.isend(chunks[send_i], (r + 1) % n)]
        [q.wait() for q in reqs]
        chunks[recv_i] = got if gather else chunks[recv_i] + got
    tensor.copy_(torch.cat(chunks).reshape(tensor.shape))


@pytest.mark.parametrize("impl", [ring_batched, ring_padded_parity, ring_recursive_views], ids=lambda f: f.__name__)
def test_correct_rings_in_other_styles_pass(impl):
    passes(RING, impl)


def sync_flat_bucket(model):
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, piece in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(piece.view_as(g))


def sync_with_avg_op(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)


def sync_all_gather_mean(model):
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is None:
            continue
        everyone = [torch.empty_like(p.grad) for _ in range(world)]
        dist.all_gather(everyone, p.grad.contiguous())
        p.grad = torch.stack(everyone).mean(0)


def sync_functional(model):
    from torch.distributed.nn.functional import all_reduce
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            p.grad.copy_(all_reduce(p.grad) / world)


@pytest.mark.parametrize("impl", [sync_flat_bucket, sync_with_avg_op, sync_all_gather_mean, sync_functional],
                         ids=lambda f: f.__name__)
def test_correct_syncs_in_other_styles_pass(impl):
    passes(SYNC, impl)


def test_the_books_ring_works_as_a_gradient_sync(book):
    ring_all_reduce = book("distributed/all_reduce")["ring_all_reduce"]

    def sync_with_ring(model):
        for p in model.parameters():
            if p.grad is not None:
                ring_all_reduce(p.grad)
                p.grad.div_(dist.get_world_size())
    passes(SYNC, sync_with_ring)


class ColumnByNarrow(nn.Module):
    def __init__(self, full, rank, world_size):
        super().__init__()
        k = full.out_features // world_size
        self.register_parameter("weight", nn.Parameter(full.weight.detach().narrow(0, rank * k, k).clone()))
        self.register_parameter("bias", nn.Parameter(full.bias.detach().narrow(0, rank * k, k).clone()))

    def forward(self, x):
        return x @ self.weight.t() + self.bias


class ColumnEinsum(nn.Module):
    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(torch.stack(full.weight.detach().split(full.out_features // world_size))[rank])
        self.bias = nn.Parameter(torch.stack(full.bias.detach().split(full.out_features // world_size))[rank])

    def forward(self, x):
        return torch.einsum("...i,oi->...o", x, self.weight) + self.bias


class RowInPlaceAllReduce(nn.Module):
    """dist.all_reduce in place on the product itself: autograd does not see it, so backward is the identity."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach().chunk(world_size, 1)[rank].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x_shard):
        out = x_shard @ self.weight.T
        dist.all_reduce(out)
        return out + self.bias


class RowGatherPartials(nn.Module):
    """All-gathers every rank's partial product and sums them, keeping its own term in the graph."""

    def __init__(self, full, rank, world_size):
        super().__init__()
        cols = full.in_features // world_size
        self.weight = nn.Parameter(full.weight.detach()[:, rank * cols:(rank + 1) * cols].clone())
        self.bias = nn.Parameter(full.bias.detach().clone())

    def forward(self, x_shard):
        mine = F.linear(x_shard, self.weight)
        everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(everyone, mine.detach().contiguous())
        everyone[dist.get_rank()] = mine
        return torch.stack(everyone).sum(0) + self.bias


@pytest.mark.parametrize("ex, impl", [(COLUMN, ColumnByNarrow), (COLUMN, ColumnEinsum), (ROW, RowInPlaceAllReduce),
                                      (ROW, RowGatherPartials)], ids=lambda v: getattr(v, "__name__", ""))
def test_correct_layers_in_other_styles_pass(ex, impl):
    passes(ex, impl)


# =========================================================================== wrong solutions, as candidates write them

def ring_whole_tensor(tensor):
    """Passes the whole running sum around the ring: right values, (N-1) whole tensors sent."""
    n, r = dist.get_world_size(), dist.get_rank()
    total, passing = tensor.detach().clone().contiguous(), tensor.detach().clone().contiguous()
    for _ in range(n - 1):
        got = torch.empty_like(passing)
        reqs = [dist.isend(passing, (r + 1) % n), dist.irecv(got, (r - 1) % n)]
        [q.wait() for q in reqs]
        total += got
        passing = got
    tensor.copy_(total)


def ring_adds_into_the_sent_chunk(tensor):
    """The received partial sum is added into the chunk this rank just sent, not the one it received."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        reqs = [dist.isend(chunks[(r - s) % n].clone(), (r + 1) % n), dist.irecv(got, (r - 1) % n)]
        [q.wait() for q in reqs]
        chunks[(r - s) % n].add_(got)
    for s in range(n - 1):
        reqs = [dist.isend(chunks[(r + 1 - s) % n], (r + 1) % n), dist.irecv(chunks[(r - s) % n], (r - 1) % n)]
        [q.wait() for q in reqs]
    tensor.copy_(flat.view_as(tensor))


def ring_one_step_short(tensor):
    """range(n - 2): each phase stops one step early."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for s in range(max(n - 2, 0)):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        reqs = [dist.isend(chunks[(r - s) % n], (r + 1) % n), dist.irecv(got, (r - 1) % n)]
        [q.wait() for q in reqs]
        chunks[(r - s - 1) % n].add_(got)
    for s in range(max(n - 2, 0)):
        reqs = [dist.isend(chunks[(r + 1 - s) % n], (r + 1) % n), dist.irecv(chunks[(r - s) % n], (r - 1) % n)]
        [q.wait() for q in reqs]
    tensor.copy_(flat.view_as(tensor))


def ring_float32_buffers(tensor):
    """torch.zeros(size) without dtype: a float32 buffer receives float64 chunks."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for phase in (0, 1):
        for s in range(n - 1):
            send_i, recv_i = ((r - s) % n, (r - s - 1) % n) if phase == 0 else ((r + 1 - s) % n, (r - s) % n)
            got = torch.zeros(chunks[recv_i].numel())
            reqs = [dist.isend(chunks[send_i], (r + 1) % n), dist.irecv(got, (r - 1) % n)]
            [q.wait() for q in reqs]
            if phase == 0:
                chunks[recv_i].add_(got)
            else:
                chunks[recv_i].copy_(got)
    tensor.copy_(flat.view_as(tensor))


def ring_receives_from_the_right(tensor):
    """Sends right and receives from the right too: fine with two ranks, a hang with three."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for phase in (0, 1):
        for s in range(n - 1):
            send_i, recv_i = ((r - s) % n, (r - s - 1) % n) if phase == 0 else ((r + 1 - s) % n, (r - s) % n)
            got = torch.empty_like(chunks[recv_i])
            reqs = [dist.isend(chunks[send_i], (r + 1) % n), dist.irecv(got, (r + 1) % n)]
            [q.wait() for q in reqs]
            chunks[recv_i].add_(got) if phase == 0 else chunks[recv_i].copy_(got)
    tensor.copy_(flat.view_as(tensor))


def ring_view_flat(tensor):
    """tensor.view(-1) writes straight into `tensor`, but raises on a non-contiguous one."""
    n, r = dist.get_world_size(), dist.get_rank()
    chunks = tensor.view(-1).tensor_split(n)
    for phase in (0, 1):
        for s in range(n - 1):
            send_i, recv_i = ((r - s) % n, (r - s - 1) % n) if phase == 0 else ((r + 1 - s) % n, (r - s) % n)
            got = torch.empty_like(chunks[recv_i])
            reqs = [dist.isend(chunks[send_i], (r + 1) % n), dist.irecv(got, (r - 1) % n)]
            [q.wait() for q in reqs]
            chunks[recv_i].add_(got) if phase == 0 else chunks[recv_i].copy_(got)


WRONG_RINGS = [(ring_whole_tensor, "traffic"), (ring_adds_into_the_sent_chunk, None),
               (ring_one_step_short, "wrong-value"),
               (ring_receives_from_the_right, "timeout"), (ring_view_flat, "exception")]


@pytest.mark.parametrize("impl, kind", WRONG_RINGS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_wrong_rings_are_rejected_without_a_false_diagnosis(impl, kind):
    report = rejected(RING, impl)
    if kind is not None:
        assert report.kind == kind, str(report)


def test_a_rank_killed_by_gloo_is_reported_and_the_check_goes_on():
    """A float32 buffer receiving float64 chunks: gloo aborts that process (SIGABRT). The report names the rank
    and the signal; nothing else is hurt. (pytest's faulthandler, inherited by the forked ranks, would print the
    aborted rank's stack: it is off for this check.)"""
    import faulthandler
    enabled = faulthandler.is_enabled()
    faulthandler.disable()
    try:
        report = rejected(RING, ring_float32_buffers)
    finally:
        if enabled:
            faulthandler.enable()
    assert report.kind == "exception" and "float64" in report.failure.call, str(report)
    assert "killed by signal" in report.failure.problem.message, str(report)
    assert evaluate(RING, ring_batched).passed


def sync_averages_parameters(model):
    for p in model.parameters():
        dist.all_reduce(p.data)
        p.data /= dist.get_world_size()


def sync_first_parameter_only(model):
    p = next(model.parameters())
    if p.grad is not None:
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()


def sync_by_batch_size(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= 3                     # the per-rank batch size, not the number of ranks


def sync_on_rank_zero_only(model):
    if dist.get_rank() == 0:
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()


def sync_avg_then_divide(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
            p.grad /= dist.get_world_size()


WRONG_SYNCS = [(sync_averages_parameters, ("all-reduce of a temporary", None)),
               (sync_first_parameter_only, (None,)), (sync_by_batch_size, (None,)),
               (sync_on_rank_zero_only, (None,)),
               (sync_avg_then_divide, ("divided twice",))]       # the same outcome as dividing twice: right name


@pytest.mark.parametrize("impl, allowed", WRONG_SYNCS, ids=lambda v: getattr(v, "__name__", ""))
def test_wrong_syncs_are_rejected(impl, allowed):
    rejected(SYNC, impl, allowed)


def test_a_sync_on_rank_zero_only_is_stopped_and_the_waiting_rank_named():
    report = evaluate(SYNC, sync_on_rank_zero_only)
    assert report.kind == "timeout", str(report)
    assert "rank 0 was waiting for a message" in report.failure.call and "rank 1 had returned" in report.failure.call


class ColumnNoSplit(PAR.ColumnSpec):
    def __init__(self, full, rank, world_size):
        nn.Module.__init__(self)
        self.weight = nn.Parameter(full.weight.detach().clone())
        self.bias = nn.Parameter(full.bias.detach().clone())


class ColumnReversedRanks(PAR.ColumnSpec):
    def __init__(self, full, rank, world_size):
        super().__init__(full, world_size - 1 - rank, world_size)


class ColumnWithoutBias(PAR.ColumnSpec):
    def forward(self, x):
        return x @ self.weight.T


class ColumnDetached(PAR.ColumnSpec):
    def forward(self, x):
        with torch.no_grad():
            return F.linear(x, self.weight, self.bias)


class RowAverages(PAR.RowSpec):
    def forward(self, x_shard):
        partial = F.linear(x_shard, self.weight)
        total = partial.detach().clone()
        dist.all_reduce(total)
        return partial + (total / dist.get_world_size() - partial.detach()) + self.bias


class RowBiasSplitEvenly(PAR.RowSpec):
    """bias / N on every rank before the sum: the right output, but each bias gets 1/N of its gradient."""

    def forward(self, x_shard):
        partial = F.linear(x_shard, self.weight) + self.bias / dist.get_world_size()
        total = partial.detach().clone()
        dist.all_reduce(total)
        return partial + (total - partial.detach())


class RowCutFromTheGraph(PAR.RowSpec):
    def forward(self, x_shard):
        total = F.linear(x_shard, self.weight).detach()
        dist.all_reduce(total)
        return total + self.bias.detach()


class RowReversedRanks(PAR.RowSpec):
    def __init__(self, full, rank, world_size):
        super().__init__(full, world_size - 1 - rank, world_size)


WRONG_LAYERS = [(COLUMN, ColumnNoSplit), (COLUMN, ColumnReversedRanks), (COLUMN, ColumnWithoutBias),
                (COLUMN, ColumnDetached), (ROW, RowAverages), (ROW, RowBiasSplitEvenly), (ROW, RowCutFromTheGraph),
                (ROW, RowReversedRanks)]


@pytest.mark.parametrize("ex, impl", WRONG_LAYERS, ids=lambda v: getattr(v, "__name__", ""))
def test_wrong_layers_are_rejected_without_a_false_diagnosis(ex, impl):
    rejected(ex, impl)


def test_a_layer_cut_from_the_graph_is_named_as_such():
    assert evaluate(ROW, RowCutFromTheGraph).kind == "no-grad"
    assert evaluate(COLUMN, ColumnDetached).kind == "no-grad"


# =========================================================================== bad input: a clear report, never a crash

def test_a_raising_rank_is_named_with_the_readers_line():
    def ring_all_reduce(tensor):
        if dist.get_world_size() == 3 and dist.get_rank() == 1:
            raise IndexError("chunk 3 out of range")
        ring_batched(tensor)

    report = evaluate(RING, ring_all_reduce)
    assert report.kind == "exception" and report.failure.mistake is None, str(report)
    assert "(rank 1 of 3)" in report.failure.problem.message
    assert "raise IndexError" in report.failure.frame
    assert "utils/grader" not in str(report)


def test_a_deadlock_is_stopped_and_named_with_every_rank():
    def ring_all_reduce(tensor):             # sends first on every rank: written differently from the mistake
        n, r = dist.get_world_size(), dist.get_rank()
        flat = tensor.reshape(-1).clone()
        for part in flat.tensor_split(n)[:max(n - 1, 0)]:
            dist.send(part.clone(), dst=(r + 1) % n)
            dist.recv(part, src=(r - 1) % n)
        tensor.copy_(flat.view_as(tensor))

    start = time.perf_counter()
    report = evaluate(RING, ring_all_reduce)
    assert time.perf_counter() - start < 30
    assert report.kind == "timeout", str(report)
    # On a machine loaded far beyond its cores a rank can reach its time limit before its first send, or report
    # after the engine's margin (and count as silent, another kind of hang): only the time-out is certain then.
    if os.getloadavg()[0] <= 3 * (os.cpu_count() or 1):
        assert report.failure.mistake == "everyone sends first", str(report)
        assert "rank 0 was waiting for a message" in report.failure.call
        assert "rank 1 was waiting for a message" in report.failure.call and "a deadlock" in report.failure.call
        assert "dist.send(part.clone()" in report.failure.frame
    with speaking("zh"):
        text = str(report)
    assert not english_left(text.split("\n", 2)[-1].split("提示")[0]), text


def test_an_endless_loop_is_stopped():
    def sync_gradients(model):
        while True:
            pass

    report = evaluate(SYNC, sync_gradients)
    assert report.kind == "timeout" and "rank 0 was still running" in report.failure.call
    assert "while True" in report.failure.frame


def test_numpy_nan_and_wrong_dtype_results_are_reported():
    def returns_numpy(tensor):
        ring_batched(tensor)
        return tensor.numpy()
    assert "numpy.ndarray" in evaluate(RING, returns_numpy).failure.problem.message

    def writes_nan(tensor):
        ring_batched(tensor)
        tensor.fill_(float("nan"))
    report = evaluate(RING, writes_nan)
    assert report.kind == "not-finite" and report.failure.mistake is None, str(report)

    class ColumnHalf(PAR.ColumnSpec):
        def forward(self, x):
            return F.linear(x, self.weight, self.bias).half()
    report = evaluate(COLUMN, ColumnHalf)
    assert not report.passed and "float16" in str(report), str(report)


def test_an_optimizer_step_inside_the_sync_is_named():
    def sync_and_step(model):
        PAR.average_gradients(model)
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad

    report = evaluate(SYNC, sync_and_step)
    assert report.kind == "mutated-input", str(report)
    assert "only the gradients should change" in report.failure.problem.message


def test_forbidden_collectives_are_caught_in_every_rank():
    def gathers(tensor):
        everyone = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(everyone, tensor.contiguous())
        tensor.copy_(sum(everyone))

    report = evaluate(RING, gathers)
    assert report.kind == "forbidden-call" and "torch.distributed.all_gather" in report.failure.problem.message

    def reduce_scatters(tensor):
        out = torch.empty_like(tensor.reshape(-1).tensor_split(dist.get_world_size())[0])
        dist.reduce_scatter_tensor(out, tensor.reshape(-1))
    report = evaluate(RING, reduce_scatters)
    assert report.kind == "forbidden-call"


def test_not_attempted_and_not_a_function():
    def stub(tensor):
        raise NotImplementedError("write it")
    assert evaluate(RING, stub).status is Status.NOT_ATTEMPTED

    class Stub(nn.Module):
        def __init__(self, full, rank, world_size):
            super().__init__()
            raise NotImplementedError

    assert evaluate(ROW, Stub).status is Status.NOT_ATTEMPTED
    assert evaluate(SYNC, 42).kind == "wrong-type"
    report = evaluate(COLUMN, PAR.ColumnSpec(nn.Linear(8, 12), 0, 1))      # an instance, not the class
    assert not report.passed


def test_an_interrupted_check_leaves_no_process_behind():
    """SIGINT (the notebook's stop button) in the middle of a check: the ranks are killed and reaped."""
    script = f"""
import sys, signal, os, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
import psutil
from test_distributed import SYNC, evaluate
signal.signal(signal.SIGINT, signal.default_int_handler)   # as a kernel has it (pytest-xdist workers ignore SIGINT)
PARENT = os.getpid()
def sync_gradients(model):      # a rank interrupts the parent while every rank is busy: no race with the time limit
    if os.getpid() != PARENT:
        os.kill(PARENT, signal.SIGINT)
    time.sleep(30)
try:
    print("finished without the interrupt:", evaluate(SYNC, sync_gradients).status)
except KeyboardInterrupt:
    print("interrupted", len(psutil.Process().children(recursive=True)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=120)
    assert out.stdout.split() == ["interrupted", "0"], (out.stdout, out.stderr[-2000:])
