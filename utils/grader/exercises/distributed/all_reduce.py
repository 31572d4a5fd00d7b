"""Part 14, distributed training: ring all-reduce written with point-to-point messages (chapter
distributed/all_reduce).

Every case runs on a real gloo group of 1 to 4 forked processes (the distributed kind): rank r gets its own
seeded tensor, the reader's `ring_all_reduce(tensor)` runs on every rank, and every rank's tensor afterwards
must hold the sum over the ranks, written in place (None returned). The oracle is PyTorch's own
`dist.all_reduce` (ReduceOp.SUM). Besides the values, the grader counts the bytes each rank hands to
point-to-point sends: a ring sends 2(N-1) chunks of about 1/N of the tensor, so between 2(N-1) * floor(n/N)
and 2(N-1) * ceil(n/N) elements per rank (chunk sizes differ by one element when N does not divide n).
Collectives are intercepted: the exercise is to build all-reduce from send and recv.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ...core import Mistake
from ...kinds import DistributedExercise, OnGroup
from ...registry import register

COLLECTIVES = ("torch.distributed.all_reduce", "torch.distributed.all_gather", "torch.distributed.reduce_scatter",
               "torch.distributed.broadcast", "torch.distributed.all_to_all", "torch.distributed.reduce",
               "torch.distributed.all_gather_into_tensor", "torch.distributed.reduce_scatter_tensor",
               "torch.distributed.all_to_all_single", "torch.distributed.gather", "torch.distributed.scatter",
               "torch.distributed.nn.functional.all_reduce")


# --------------------------------------------------------------------------- the oracle and the contract

def sum_over_ranks(tensor):
    """PyTorch's all-reduce (a sum) on a contiguous copy, written back into `tensor`."""
    total = tensor.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(total)
    tensor.copy_(total)


def ring_traffic(args, world_size):
    """(low, high) bytes one rank may send: 2(N-1) chunks, each numel // N or numel // N + 1 elements."""
    tensor = args[0]
    per_chunk = 2 * (world_size - 1) * tensor.element_size()
    return per_chunk * (tensor.numel() // world_size), per_chunk * -(-tensor.numel() // world_size)


# --------------------------------------------------------------------------- cases

def _ranked(shape, dtype, seed, layout="contiguous"):
    """Each rank's own tensor, seeded by (seed, rank): contiguous, transposed or strided in memory."""
    def make(rank, world_size):
        g = torch.Generator().manual_seed(1000 * seed + rank)
        if layout == "transposed":
            t = torch.randn(shape[::-1], generator=g, dtype=torch.float64).to(dtype).t()
        elif layout == "strided":
            t = torch.randn(*shape[:-1], 2 * shape[-1], generator=g, dtype=torch.float64).to(dtype)[..., ::2]
        else:
            t = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        return (t,), {}
    return make


def _cases():
    f32, f64 = torch.float32, torch.float64
    return [
        OnGroup(_ranked((7,), f32, 1), "one process: nothing to send", world_size=1),
        OnGroup(_ranked((10,), f32, 2), "two ranks, 10 elements", world_size=2),
        OnGroup(_ranked((3, 5), f64, 3), "2-D, float64", world_size=2),
        OnGroup(_ranked((4, 6), f64, 4, "transposed"), "non-contiguous (transposed): write the sum back into it",
                world_size=2),
        OnGroup(_ranked((), f64, 5), "a 0-d tensor (a scalar loss) over 2 ranks", world_size=2),
        OnGroup(_ranked((10,), f32, 6), "10 elements over 3 ranks: chunks of 4, 3 and 3", world_size=3),
        OnGroup(_ranked((4, 5), f64, 7), "2-D, 20 elements over 3 ranks", world_size=3),
        OnGroup(_ranked((2, 3, 4), f32, 8), "3-D, 24 elements over 3 ranks", world_size=3),
        OnGroup(_ranked((12,), f32, 9), "12 elements over 4 ranks: equal chunks", world_size=4),
        OnGroup(_ranked((11,), f32, 10), "11 elements over 4 ranks: the last chunk is shorter", world_size=4),
        OnGroup(_ranked((6, 7), f64, 11), "2-D, 42 elements over 4 ranks", world_size=4),
        OnGroup(_ranked((5, 6), f32, 12, "strided"), "non-contiguous (every other column) over 4 ranks",
                world_size=4),
        OnGroup(_ranked((3,), f32, 13), "fewer elements than ranks: one chunk is empty", world_size=4),
        OnGroup(_ranked((1003,), f64, 14), "1003 elements over 4 ranks, float64", world_size=4),
    ]


# --------------------------------------------------------------------------- mistakes, as candidates write them

def _exchange(send, recv, right, left):
    """Post a send to the right neighbour and a receive from the left one together, then wait for both."""
    requests = [dist.isend(send, right), dist.irecv(recv, left)]
    for request in requests:
        request.wait()


def gather_and_broadcast(tensor):
    """Everyone sends to rank 0, which adds and sends the total back: right values, N-1 whole tensors sent."""
    world, rank = dist.get_world_size(), dist.get_rank()
    total = tensor.contiguous().clone()
    if rank == 0:
        incoming = torch.empty_like(total)
        for src in range(1, world):
            dist.recv(incoming, src)
            total += incoming
        for dst in range(1, world):
            dist.send(total, dst)
    else:
        dist.send(total, 0)
        dist.recv(total, 0)
    tensor.copy_(total.view_as(tensor))


def reduce_scatter_only(tensor):
    """The N-1 reduce-scatter steps, and no all-gather."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        _exchange(chunks[(r - s) % n], got, (r + 1) % n, (r - 1) % n)
        chunks[(r - s - 1) % n].add_(got)
    tensor.copy_(flat.view_as(tensor))


def gather_from_own_chunk(tensor):
    """The all-gather starts from chunk r, but after the reduce-scatter rank r holds chunk r + 1."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        _exchange(chunks[(r - s) % n], got, (r + 1) % n, (r - 1) % n)
        chunks[(r - s - 1) % n].add_(got)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        _exchange(chunks[(r - s) % n], got, (r + 1) % n, (r - 1) % n)
        chunks[(r - s - 1) % n].copy_(got)
    tensor.copy_(flat.view_as(tensor))


def floor_sized_chunks(tensor):
    """Chunks of numel // N elements: when N does not divide numel, the last numel % N elements are never
    reduced."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    size = flat.numel() // n
    chunks = [flat[i * size:(i + 1) * size] for i in range(n)]
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        _exchange(chunks[(r - s) % n], got, (r + 1) % n, (r - 1) % n)
        chunks[(r - s - 1) % n] += got
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s) % n])
        _exchange(chunks[(r + 1 - s) % n], got, (r + 1) % n, (r - 1) % n)
        chunks[(r - s) % n].copy_(got)
    tensor.copy_(flat.view_as(tensor))


def _ring_sum(tensor):
    """A correct ring on a flat copy; returns the flat sum (the mistakes below misuse it)."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        _exchange(chunks[(r - s) % n], got, (r + 1) % n, (r - 1) % n)
        chunks[(r - s - 1) % n].add_(got)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s) % n])
        _exchange(chunks[(r + 1 - s) % n], got, (r + 1) % n, (r - 1) % n)
        chunks[(r - s) % n].copy_(got)
    return flat


def returns_new_tensor(tensor):
    """Right sum, returned as a new tensor; `tensor` itself is left as it was."""
    return _ring_sum(tensor).view_as(tensor)


def averages(tensor):
    """Divides by the world size: a mean, not the sum all-reduce computes."""
    tensor.copy_(_ring_sum(tensor).view_as(tensor) / dist.get_world_size())


def calls_all_reduce(tensor):
    dist.all_reduce(tensor)


def everyone_sends_first(tensor):
    """Blocking send, then blocking receive, on every rank: gloo's send waits for the matching receive."""
    n, r = dist.get_world_size(), dist.get_rank()
    flat = tensor.reshape(-1).clone()
    chunks = flat.tensor_split(n)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s - 1) % n])
        dist.send(chunks[(r - s) % n], (r + 1) % n)
        dist.recv(got, (r - 1) % n)
        chunks[(r - s - 1) % n].add_(got)
    for s in range(n - 1):
        got = torch.empty_like(chunks[(r - s) % n])
        dist.send(chunks[(r + 1 - s) % n], (r + 1) % n)
        dist.recv(got, (r - 1) % n)
        chunks[(r - s) % n].copy_(got)
    tensor.copy_(flat.view_as(tensor))


register(DistributedExercise(
    name="ring_all_reduce",
    chapter="distributed/all_reduce",
    signature="ring_all_reduce(tensor)",
    oracle=sum_over_ranks,
    cases=_cases,
    forbidden=COLLECTIVES,
    traffic=ring_traffic,
    traffic_rule="a ring all-reduce sends 2(N-1) chunks of about 1/N of the tensor",
    hints=("split a flat copy of `tensor` into N chunks (tensor_split accepts sizes N does not divide); N-1 "
           "reduce-scatter steps, then N-1 all-gather steps, each sending one chunk to rank r+1 and receiving one "
           "from rank r-1   (eqs. rs-step, ag-step)",
           "post each step's send and receive together (dist.isend and dist.irecv, then wait on both): a blocking "
           "send on every rank waits forever. After the reduce-scatter, rank r holds the complete sum of chunk "
           "(r + 1) % N, which is where the all-gather starts   (eq. rs-result)",
           "reduce-scatter step s: send chunk (r - s) % N, receive into a fresh buffer and add it to chunk "
           "(r - s - 1) % N; all-gather step s: send chunk (r + 1 - s) % N and copy what arrives into chunk "
           "(r - s) % N; then copy the flat result back into `tensor` and return None   (eqs. rs-step, ag-step)"),
    mistakes=[
        Mistake("gather and broadcast", gather_and_broadcast,
                "every rank sends its whole tensor to rank 0, which adds them and sends the total back: the values "
                "are right, but rank 0 sends N-1 whole tensors and the others wait on it. In a ring every rank "
                "sends 2(N-1) chunks of 1/N of the tensor, to its right neighbour only"),
        Mistake("no all-gather", reduce_scatter_only,
                "after the reduce-scatter each rank holds the complete sum of one chunk only: the N-1 all-gather "
                "steps must then pass the finished chunks around the ring"),
        Mistake("all-gather from the wrong chunk", gather_from_own_chunk,
                "the all-gather starts from the wrong chunk: after N-1 reduce-scatter steps rank r holds the "
                "complete sum of chunk (r + 1) % N, not chunk r, so send that one first and copy, not add, what "
                "arrives"),
        Mistake("last chunk misses the remainder", floor_sized_chunks,
                "your chunks have numel // N elements each, so when N does not divide numel the last numel % N "
                "elements are never reduced: let the chunks cover the whole tensor (tensor_split(N) makes the "
                "first numel % N chunks one element longer)"),
        Mistake("returns a new tensor", returns_new_tensor,
                "the sum is returned as a new tensor, but `tensor` itself is unchanged: all-reduce works in "
                "place (copy the result back with tensor.copy_(...)) and returns None"),
        Mistake("averages", averages,
                "the result is divided by the world size: all-reduce computes the sum (ReduceOp.SUM); averaging "
                "gradients is the caller's job, done once after the sum"),
        Mistake("calls dist.all_reduce", calls_all_reduce,
                "dist.all_reduce is the collective this exercise asks you to build from point-to-point messages "
                "(dist.isend, dist.irecv, dist.send, dist.recv)"),
        Mistake("everyone sends first", everyone_sends_first,     # declared last: a hang stops its group
                "deadlock: every rank calls a blocking dist.send before its dist.recv, and with gloo a send waits "
                "until the neighbour posts the matching receive, which it never does because it is sending too. "
                "Post the send and the receive together (dist.isend and dist.irecv, then wait on both), or let "
                "even ranks send first and odd ranks receive first"),
    ],
))
