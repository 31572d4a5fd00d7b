"""Part 13, sequences: the LSTM cell (chapter sequences/lstm).

Each case is a script of forward calls on one cell with random non-default weights: a first step without a
state (zeros), then steps that feed back the (h, c) the previous call returned, so that a sequence is unrolled
through the reader's cell exactly as `nn.LSTM` unrolls its own. The oracle is `nn.LSTMCell`.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core import Mistake
from ...inputs import call, case, f64, randn
from ...kinds import ModuleExercise, Script, Step
from ...registry import register

FORBIDDEN = ("nn.LSTMCell", "nn.LSTM", "torch.lstm_cell", "torch.lstm")


# --------------------------------------------------------------------------- the oracle

class LSTMCellSpec(nn.LSTMCell):
    """PyTorch's own cell, with the exercise's `forward(x, state=None) -> (h, c)`."""

    def forward(self, x, state=None):
        return super().forward(x, state)


def scaled_state(state: dict, gen: torch.Generator) -> dict:
    """Weights randn / sqrt(fan_in) and biases randn * 0.5: gates neither saturated nor all near 0.5."""
    return {name: torch.randn(t.shape, generator=gen, dtype=torch.float64).mul(
                t.shape[1] ** -0.5 if t.dim() == 2 else 0.5).to(t.dtype)
            for name, t in state.items()}


# --------------------------------------------------------------------------- cases

def _state_of(prev):
    """The (h, c) returned by the previous call, or whatever came back (so that a wrong return fails there)."""
    return prev[-1] if prev else None


def _unroll(input_size, hidden_size, T, B=3, seed=0, bias=True, dtype=None, layout="contiguous", backward=False,
            given=False, scale=1.0, eval_after=False):
    """T steps of a sequence: the first from state=None (or from a given state), the rest fed the state back."""
    if layout == "transposed":
        xs = randn(T, input_size, B, seed=seed, scale=scale).transpose(1, 2)      # (T, B, in), strided
    else:
        xs = randn(T, B, input_size, seed=seed, scale=scale)                       # (T, B, in)
    if dtype is not None:
        xs = xs.to(dtype)
    if given:
        h0 = randn(B, hidden_size, seed=seed + 1, dtype=dtype or torch.float32)
        c0 = randn(B, hidden_size, seed=seed + 2, dtype=dtype or torch.float32, scale=2.0)
        steps = [Step(call(xs[0], (h0, c0)))]
    else:
        steps = [Step(call(xs[0]))]
    for t in range(1, T):
        steps.append(Step(lambda prev, x=xs[t]: call(x, _state_of(prev)), train=not (eval_after and t == T - 1)))
    steps[-1].grad = backward               # backward from the last step, through every step before it
    init = ((input_size, hidden_size), {} if bias else {"bias": False})
    return Script(init=init, steps=steps, dtype=dtype)


def _keyword_state(input_size, hidden_size, B=2, seed=0):
    x = randn(B, input_size, seed=seed)
    h0, c0 = randn(B, hidden_size, seed=seed + 1), randn(B, hidden_size, seed=seed + 2)
    return Script(init=((input_size, hidden_size), {}), steps=[Step(call(x, state=(h0, c0)))])


def _cases():
    return [
        case(_unroll, 5, 4, 1, note="one step from the zero state"),
        case(_unroll, 6, 8, 5, seed=1, note="a sequence of 5 steps, each fed the (h, c) of the one before"),
        case(_unroll, 4, 3, 3, seed=2, given=True, note="a given initial state (h0, c0)"),
        case(_keyword_state, 3, 5, seed=3, note="the state passed as a keyword: forward(x, state=(h0, c0))"),
        case(_unroll, 5, 6, 4, seed=4, dtype=f64, note="float64"),
        case(_unroll, 7, 4, 3, seed=5, bias=False, note="bias=False: no bias_ih, no bias_hh"),
        case(_unroll, 3, 5, 4, B=1, seed=6, note="a batch of one"),
        case(_unroll, 6, 5, 3, seed=7, layout="transposed", note="non-contiguous x (every step a strided view)"),
        case(_unroll, 4, 1, 6, seed=8, note="hidden_size=1, 6 steps"),
        case(_unroll, 5, 3, 3, seed=9, given=True, scale=4.0, note="large inputs: saturated gates"),
        case(_unroll, 4, 4, 3, B=2, seed=10, backward=True, note="gradients through 3 steps"),
        case(_unroll, 5, 4, 3, seed=11, eval_after=True, note="eval mode gives the same cell (no dropout)"),
    ]


# --------------------------------------------------------------------------- mistakes: one cell, one flaw each

class _Cell(nn.Module):
    """A hand-written LSTM cell (nn.LSTMCell is forbidden); each mistake overrides one step."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        else:
            self.bias_ih = self.bias_hh = None

    def initial(self, x):
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, zeros

    def preactivations(self, x, h):                                     # (B, 4h)
        z = x @ self.weight_ih.T + h @ self.weight_hh.T
        return z if self.bias_ih is None else z + self.bias_ih + self.bias_hh

    def gates(self, z):
        i, f, g, o = z.chunk(4, dim=-1)
        return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)

    def cell(self, i, f, g, c):
        return f * c + i * g

    def hidden(self, o, c_new, c):
        return o * torch.tanh(c_new)

    def returned(self, h, c):
        return h, c

    def forward(self, x, state=None):
        h, c = self.initial(x) if state is None else state
        i, f, g, o = self.gates(self.preactivations(x, h))
        c_new = self.cell(i, f, g, c)
        return self.returned(self.hidden(o, c_new, c), c_new)


class GatesIFOG(_Cell):
    def gates(self, z):
        i, f, o, g = z.chunk(4, dim=-1)
        return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)


class SigmoidCandidate(_Cell):
    def gates(self, z):
        i, f, g, o = z.chunk(4, dim=-1)
        return torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(g), torch.sigmoid(o)


class ForgetOnCandidate(_Cell):
    def cell(self, i, f, g, c):
        return i * c + f * g


class NoTanhOnCell(_Cell):
    def hidden(self, o, c_new, c):
        return o * c_new


class HiddenFromOldCell(_Cell):
    def hidden(self, o, c_new, c):
        return o * torch.tanh(c)


class OneBias(_Cell):
    def preactivations(self, x, h):
        z = x @ self.weight_ih.T + h @ self.weight_hh.T
        return z if self.bias_ih is None else z + self.bias_ih


class StateIgnored(_Cell):
    def forward(self, x, state=None):
        return super().forward(x, None)


class ReturnsCellFirst(_Cell):
    def returned(self, h, c):
        return c, h


class CallsTheBuiltin(LSTMCellSpec):
    pass


register(ModuleExercise(
    name="LSTMCell",
    chapter="sequences/lstm",
    signature="LSTMCell(input_size, hidden_size, bias=True); forward(x, state=None) -> (h, c)",
    oracle=LSTMCellSpec,
    cases=_cases,
    randomize=scaled_state,
    forbidden=FORBIDDEN,
    hints=("one affine map of x and h gives all four gates at once, in PyTorch's order i, f, g, o; the cell state "
           "is updated additively and the hidden state reads it through tanh   (eqs. lstm-gates, lstm-cell, "
           "lstm-hidden)",
           "z = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh has 4 * hidden_size columns: chunk it into i, "
           "f, g, o; i, f, o go through sigmoid, g through tanh; a missing state means h = c = zeros",
           "c_new = f * c + i * g; h_new = o * tanh(c_new); return (h_new, c_new)   (eqs. lstm-cell, lstm-hidden)"),
    mistakes=[
        Mistake("gates in the order i, f, o, g", GatesIFOG,
                "your gates are in the wrong order: PyTorch stacks the rows of weight_ih as i, f, g, o (input, "
                "forget, cell candidate, output), so the third chunk is the candidate g and the fourth the output "
                "gate o."),
        Mistake("sigmoid on the candidate", SigmoidCandidate,
                "the cell candidate g goes through tanh, not sigmoid: it is the new content, in (-1, 1), while i, f "
                "and o are gates in (0, 1)."),
        Mistake("forget gate on the candidate", ForgetOnCandidate,
                "the gates are swapped in the cell update: the forget gate scales the old cell state and the input "
                "gate the candidate, c_new = f * c + i * g."),
        Mistake("h = o * c", NoTanhOnCell,
                "the hidden state is o * tanh(c_new): without the tanh, h is unbounded and does not match."),
        Mistake("h from the old cell state", HiddenFromOldCell,
                "your hidden state reads the old cell state: update c first, then h = o * tanh(c_new)."),
        Mistake("bias_hh left out", OneBias,
                "bias_hh is never added: PyTorch's cell adds both biases, x @ weight_ih.T + bias_ih + h @ "
                "weight_hh.T + bias_hh."),
        Mistake("state ignored", StateIgnored,
                "the state you are given is ignored: every call starts from zeros. Use (h, c) = state when it is "
                "not None."),
        Mistake("returns (c, h)", ReturnsCellFirst,
                "you return (c, h): the contract (and nn.LSTMCell) returns (h, c), the hidden state first."),
        Mistake("calls the built-in", CallsTheBuiltin,
                "this exercise asks you to write the cell yourself: nn.LSTMCell, nn.LSTM and torch.lstm_cell are "
                "off limits here; use matmul, sigmoid and tanh."),
    ],
))
