"""Part 13, sequences: the LSTMCell grader (utils/grader/exercises/sequences/lstm.py) and the CRF graders
(crf_log_likelihood, viterbi_decode in utils/grader/exercises/sequences/crf.py).

LSTMCell: the oracle (PyTorch's cell) is checked against the documented equations written out in float64; the
book's cell, loaded with `nn.LSTM`'s weights and unrolled, gives `nn.LSTM`'s outputs; its parameter count is
Part 6's `count_lstm_params`; correct cells in other styles pass; wrong cells as candidates write them are
rejected; bad input gets a clear report.
"""

from __future__ import annotations

import time
from itertools import product

import pytest
import torch
from torch import nn

from utils.grader import get, run
from utils.grader.exercises.sequences import crf as crf_decl
from utils.grader.exercises.sequences import lstm as lstm_decl

f64 = torch.float64
LSTM_EX = "LSTMCell"


# =========================================================================== LSTMCell: the oracle

def documented_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's documented LSTMCell equations, one gate at a time, in float64."""
    H = h.shape[1]
    rows = {name: slice(k * H, (k + 1) * H) for k, name in enumerate("ifgo")}

    def pre(name):
        r = rows[name]
        return x @ w_ih[r].T + b_ih[r] + h @ w_hh[r].T + b_hh[r]

    i, f, o = torch.sigmoid(pre("i")), torch.sigmoid(pre("f")), torch.sigmoid(pre("o"))
    g = torch.tanh(pre("g"))
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


@pytest.mark.parametrize("seed", range(4))
def test_lstm_oracle_matches_the_documented_equations(seed):
    g = torch.Generator().manual_seed(seed)
    n, H, B = 3 + seed, 2 + 2 * seed, 1 + seed
    cell = lstm_decl.LSTMCellSpec(n, H).double()
    cell.load_state_dict(lstm_decl.scaled_state(cell.state_dict(), g))
    x = torch.randn(B, n, generator=g, dtype=f64)
    h, c = torch.randn(B, H, generator=g, dtype=f64), torch.randn(B, H, generator=g, dtype=f64)
    want = documented_cell(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    torch.testing.assert_close(cell(x, (h, c)), want)
    zeros = torch.zeros(B, H, dtype=f64)
    torch.testing.assert_close(cell(x), documented_cell(x, zeros, zeros, cell.weight_ih, cell.weight_hh,
                                                        cell.bias_ih, cell.bias_hh))


def _from_lstm(cell, lstm):
    cell.load_state_dict({name.removesuffix("_l0"): p for name, p in lstm.state_dict().items()})
    return cell


@pytest.mark.parametrize("bias", [True, False])
def test_the_book_cell_unrolled_equals_nn_lstm(book, bias):
    LSTMCell = book("sequences/lstm")[LSTM_EX]
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, bias=bias, batch_first=True).double()
    cell = _from_lstm(LSTMCell(5, 7, bias=bias).double(), lstm)
    x = torch.randn(3, 9, 5, dtype=f64)
    h0, c0 = torch.randn(1, 3, 7, dtype=f64), torch.randn(1, 3, 7, dtype=f64)
    out, (h_T, c_T) = lstm(x, (h0, c0))
    state, hs = (h0[0], c0[0]), []
    for t in range(x.shape[1]):
        state = cell(x[:, t], state)
        hs.append(state[0])
    torch.testing.assert_close(torch.stack(hs, 1), out)
    torch.testing.assert_close(state, (h_T[0], c_T[0]))


def test_the_book_cell_has_part_6s_parameter_count(book):
    LSTMCell = book("sequences/lstm")[LSTM_EX]
    count_lstm_params = book("scale/parameter_count")["count_lstm_params"]
    for n, H, bias in [(300, 512, True), (10, 20, False), (1, 1, True)]:
        own = sum(p.numel() for p in LSTMCell(n, H, bias=bias).parameters())
        assert own == count_lstm_params(n, H, bias=bias) == 4 * H * (n + H) + (8 * H if bias else 0)


# =========================================================================== LSTMCell: other correct styles

class _Base(lstm_decl._Cell):
    """The declaration's parameters (PyTorch's names and shapes); each style writes its own forward."""

    def start(self, x, state):
        if state is None:
            z = torch.zeros(x.shape[0], self.hidden_size, dtype=x.dtype)
            return z, z
        return state


class GatePerSlice(_Base):
    """Each gate from its own rows of the weights, as the documentation writes them."""

    def forward(self, x, state=None):
        h, c = self.start(x, state)
        H = self.hidden_size

        def gate(k):
            pre = x @ self.weight_ih[k * H:(k + 1) * H].T + h @ self.weight_hh[k * H:(k + 1) * H].T
            if self.bias_ih is not None:
                pre = pre + self.bias_ih[k * H:(k + 1) * H] + self.bias_hh[k * H:(k + 1) * H]
            return pre

        i, f, g, o = torch.sigmoid(gate(0)), torch.sigmoid(gate(1)), torch.tanh(gate(2)), torch.sigmoid(gate(3))
        c = f * c + i * g
        return o * torch.tanh(c), c


class ConcatenatedWeights(_Base):
    """One matmul of [x, h] with the two weight matrices side by side, the biases summed first."""

    def forward(self, x, state=None):
        h, c = self.start(x, state)
        z = torch.cat([x, h], 1) @ torch.cat([self.weight_ih, self.weight_hh], 1).T
        if self.bias_ih is not None:
            z = z + (self.bias_ih + self.bias_hh)
        i, f, g, o = z.view(x.shape[0], 4, self.hidden_size).unbind(1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class EinsumCell(_Base):
    """einsum, and the sigmoid written as (1 + tanh(z / 2)) / 2."""

    def forward(self, x, state=None):
        h, c = self.start(x, state)
        z = torch.einsum("bi,gi->bg", x, self.weight_ih) + torch.einsum("bh,gh->bg", h, self.weight_hh)
        if self.bias_ih is not None:
            z = z + self.bias_ih + self.bias_hh
        i, f, g, o = z.split(self.hidden_size, dim=1)
        sig = lambda t: (1 + torch.tanh(t / 2)) / 2                              # noqa: E731
        c = sig(f) * c + sig(i) * torch.tanh(g)
        return sig(o) * torch.tanh(c), c


@pytest.mark.parametrize("impl", [GatePerSlice, ConcatenatedWeights, EinsumCell], ids=lambda c: c.__name__)
def test_correct_cells_in_other_styles_pass(impl):
    start = time.process_time()
    report = run(LSTM_EX, impl)
    assert report.passed, str(report)
    assert time.process_time() - start < 1.0


# =========================================================================== LSTMCell: wrong cells as written

class OneLinear(nn.Module):
    """nn.Linear over [x, h]: right arithmetic, but not PyTorch's parameter names and shapes."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.hidden_size = hidden_size
        self.gates = nn.Linear(input_size + hidden_size, 4 * hidden_size, bias=bias)

    def forward(self, x, state=None):
        h, c = state if state is not None else (x.new_zeros(x.shape[0], self.hidden_size),) * 2
        i, f, g, o = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class NoTranspose(lstm_decl._Cell):
    def preactivations(self, x, h):
        return x @ self.weight_ih + h @ self.weight_hh


class InputOnly(lstm_decl._Cell):
    """Gates from x alone: the recurrent weights are never used."""

    def preactivations(self, x, h):
        return x @ self.weight_ih.T + self.bias_ih + self.bias_hh if self.bias_ih is not None else x @ self.weight_ih.T


class Float32Zeros(lstm_decl._Cell):
    def initial(self, x):
        zeros = torch.zeros(x.shape[0], self.hidden_size)
        return zeros, zeros


class SquashedCell(lstm_decl._Cell):
    def cell(self, i, f, g, c):
        return torch.tanh(f * c + i * g)


class DetachedState(lstm_decl._Cell):
    """Truncated backpropagation inside the cell: the state is detached on the way in."""

    def forward(self, x, state=None):
        if state is not None:
            state = (state[0].detach(), state[1].detach())
        return super().forward(x, state)


class HiddenOnly(lstm_decl._Cell):
    def returned(self, h, c):
        return h


class InPlaceCell(lstm_decl._Cell):
    """c *= f written in place, on the caller's tensor."""

    def cell(self, i, f, g, c):
        return c.mul_(f).add_(i * g)


UNREGISTERED = [(OneLinear, ("wrong-keys", "wrong-value")), (NoTranspose, ("exception",)),
                (InputOnly, ("wrong-value",)), (Float32Zeros, ("wrong-dtype", "exception")),
                (SquashedCell, ("wrong-value",)), (DetachedState, ("gradient",)),
                (HiddenOnly, ("wrong-type", "wrong-shape", "wrong-value")),
                (InPlaceCell, ("mutated-input", "exception"))]


@pytest.mark.parametrize("impl,kinds", UNREGISTERED, ids=[c.__name__ for c, _ in UNREGISTERED])
def test_wrong_cells_as_candidates_write_them_are_rejected(impl, kinds):
    report = run(LSTM_EX, impl)
    assert not report.passed, f"{impl.__name__} passes"
    assert report.kind in kinds, str(report)


# =========================================================================== LSTMCell: bad input

def test_lstm_bad_input_gives_a_clear_report():
    class Raises(lstm_decl._Cell):
        def forward(self, x, state=None):
            raise ValueError("the gates went wrong")

    class ReturnsNumpy(lstm_decl._Cell):
        def forward(self, x, state=None):
            h, c = super().forward(x, state)
            return h.detach().numpy(), c.detach().numpy()

    class NaNs(lstm_decl._Cell):
        def forward(self, x, state=None):
            h, c = super().forward(x, state)
            return h * torch.nan, c

    class CallsTheFunctional(lstm_decl._Cell):
        def forward(self, x, state=None):
            h, c = self.initial(x) if state is None else state
            return torch.lstm_cell(x, (h, c), self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    report = run(LSTM_EX, Raises)
    assert report.kind == "exception" and "the gates went wrong" in str(report) and report.failure.mistake is None
    assert run(LSTM_EX, ReturnsNumpy).kind in ("returned-numpy", "wrong-type")
    assert run(LSTM_EX, NaNs).kind == "not-finite"
    report = run(LSTM_EX, CallsTheFunctional)
    assert report.kind == "forbidden-call" and "torch.lstm_cell" in str(report)
    report = run(LSTM_EX, lstm_decl.LSTMCellSpec(3, 4))
    assert report.kind == "wrong-type" and "not an instance" in str(report)


# =========================================================================== CRF: the brute-force oracles

LL_EX, VIT_EX = "crf_log_likelihood", "viterbi_decode"


def test_crf_oracle_on_a_hand_computed_example():
    """Two steps, two tags: the four path scores written out by hand."""
    E = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]], dtype=f64)                      # (1, 2, 2)
    A = torch.tensor([[0.5, -1.0], [0.0, 1.0]], dtype=f64)
    s, e = torch.tensor([0.0, 1.0], dtype=f64), torch.tensor([0.5, 0.0], dtype=f64)
    scores = {(0, 0): 0 + 1 + 0.5 + 0 + 0.5, (0, 1): 0 + 1 - 1.0 + 2 + 0, (1, 0): 1 + 0 + 0 + 0 + 0.5,
              (1, 1): 1 + 0 + 1.0 + 2 + 0}
    log_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=f64), 0)
    for path, score in scores.items():
        got = crf_decl.crf_log_likelihood_oracle(E, torch.tensor([path]), A, s, e)
        torch.testing.assert_close(got, (score - log_z).reshape(1))
    assert crf_decl.viterbi_oracle(E, A, s, e) == [[1, 1]]
    mask = torch.tensor([[True, False]])                                         # length 1: s + E[0] + e
    one = torch.tensor([1.0 + 0.5, 1.0 + 0.0 + 0.0], dtype=f64)
    torch.testing.assert_close(crf_decl.crf_log_likelihood_oracle(E, torch.tensor([[0, 1]]), A, s, e, mask),
                               (one[0] - torch.logsumexp(one, 0)).reshape(1))
    assert crf_decl.viterbi_oracle(E, A, s, e, mask) == [[0]]


@pytest.mark.parametrize("seed", range(3))
def test_crf_oracle_is_an_hmm_posterior_with_log_parameters(seed):
    """With s = log pi, A = log P, E[t, j] = log B[j, x_t], e = 0, p(y | x) is the HMM's Bayes posterior."""
    g = torch.Generator().manual_seed(seed)
    K, V, T = 3, 4, 4
    pi = torch.rand(K, generator=g, dtype=f64).softmax(0)
    P = torch.rand(K, K, generator=g, dtype=f64).mul(3).softmax(1)
    Bm = torch.rand(K, V, generator=g, dtype=f64).mul(3).softmax(1)
    x = torch.randint(0, V, (T,), generator=g)
    paths = list(product(range(K), repeat=T))
    joint = torch.tensor([float(pi[y[0]] * torch.prod(torch.stack([P[a, b] for a, b in zip(y, y[1:])]))
                                * torch.prod(torch.stack([Bm[y[t], x[t]] for t in range(T)]))) for y in paths],
                         dtype=f64)
    E = Bm[:, x].T.log()[None].expand(len(paths), T, K)
    got = crf_decl.crf_log_likelihood_oracle(E, torch.tensor(paths), P.log(), pi.log(), torch.zeros(K, dtype=f64))
    torch.testing.assert_close(got.exp(), joint / joint.sum())
    assert crf_decl.viterbi_oracle(E[:1], P.log(), pi.log(), torch.zeros(K, dtype=f64)) == \
        [list(paths[int(joint.argmax())])]


@pytest.mark.parametrize("i", range(len(get(VIT_EX).all_cases())))
def test_viterbi_oracle_is_the_argmax_of_every_path_scored_here(i):
    """Each case's best path against the test's own scoring of every path, eq. (crf-score) written as a loop."""
    (emissions, A, s, e), kwargs = get(VIT_EX).all_cases()[i].make()
    best = crf_decl.viterbi_oracle(emissions, A, s, e, **kwargs)
    K = emissions.shape[2]
    for b, path in enumerate(best):
        E = emissions[b].double().tolist()

        def score(y):
            return (float(s[y[0]]) + float(e[y[-1]]) + sum(E[t][y[t]] for t in range(len(y)))
                    + sum(float(A[y[t - 1], y[t]]) for t in range(1, len(y))))

        assert list(max(product(range(K), repeat=len(path)), key=score)) == path


# =========================================================================== CRF: other correct styles

def ll_per_sequence(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    """One sequence at a time, trimmed to its length, plain Python loops over time and tags."""
    B, T, K = emissions.shape
    lengths = [T] * B if mask is None else mask.sum(1).tolist()
    out = []
    for b, L in enumerate(lengths):
        e, y = emissions[b, :L], tags[b, :L].tolist()
        score = start_transitions[y[0]] + e[0, y[0]] + end_transitions[y[-1]]
        for t in range(1, L):
            score = score + transitions[y[t - 1], y[t]] + e[t, y[t]]
        alpha = [start_transitions[j] + e[0, j] for j in range(K)]
        for t in range(1, L):
            alpha = [torch.logsumexp(torch.stack([alpha[i] + transitions[i, j] for i in range(K)]), 0) + e[t, j]
                     for j in range(K)]
        out.append(score - torch.logsumexp(torch.stack([alpha[j] + end_transitions[j] for j in range(K)]), 0))
    return torch.stack(out)


def gold_score(emissions, tags, transitions, start_transitions, end_transitions, mask):
    """S(x, y) of the given tags with gathers and one masked sum, eq. (crf-score)."""
    lengths = mask.sum(1)
    gathered = emissions.gather(2, tags[:, :, None])[:, :, 0]                                       # (B, T)
    pair = transitions[tags[:, :-1], tags[:, 1:]]                                                    # (B, T-1)
    score = (gathered * mask).sum(1) + (pair * mask[:, 1:]).sum(1) + start_transitions[tags[:, 0]]
    return score + end_transitions[tags.gather(1, (lengths - 1)[:, None])[:, 0]]


def ll_backward_algorithm(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    """log Z by the backward recursion, beta_{t-1}(i) = LSE_j(A_ij + E_tj + beta_t(j)), from each sequence's end."""
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
    lengths = mask.sum(1)
    beta = end_transitions.expand(B, K)
    for t in range(T - 1, 0, -1):
        back = torch.logsumexp(transitions[None] + (emissions[:, t] + beta)[:, None, :], dim=2)     # (B, K)
        beta = torch.where((t < lengths)[:, None], back, beta)
    log_z = torch.logsumexp(start_transitions + emissions[:, 0] + beta, dim=1)
    return gold_score(emissions, tags, transitions, start_transitions, end_transitions, mask) - log_z


def ll_scaled_probabilities(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    """The forward algorithm in probability space, each alpha rescaled to sum to 1 (Rabiner's scaling): exp of
    shifted scores never overflows, and log Z is the sum of the log scale factors."""
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
    shift = emissions.amax(2, keepdim=True)                                                         # (B, T, 1)
    M, E = transitions.exp(), (emissions - shift).exp()
    a = start_transitions.exp() * E[:, 0]
    log_z = shift[:, 0, 0] + a.sum(1).log()
    a = a / a.sum(1, keepdim=True)
    for t in range(1, T):
        new = (a @ M) * E[:, t]
        c = new.sum(1, keepdim=True)
        a = torch.where(mask[:, t, None], new / c, a)
        log_z = log_z + torch.where(mask[:, t], shift[:, t, 0] + c[:, 0].log(), torch.zeros_like(log_z))
    log_z = log_z + (a * end_transitions.exp()).sum(1).log()
    return gold_score(emissions, tags, transitions, start_transitions, end_transitions, mask) - log_z


def viterbi_python_lists(emissions, transitions, start_transitions, end_transitions, mask=None):
    """Every sequence on its own, in plain Python floats."""
    B, T, K = emissions.shape
    lengths = [T] * B if mask is None else mask.sum(1).tolist()
    A, s, e = transitions.tolist(), start_transitions.tolist(), end_transitions.tolist()
    out = []
    for b, L in enumerate(lengths):
        E = emissions[b].tolist()
        delta, back = [s[j] + E[0][j] for j in range(K)], []
        for t in range(1, L):
            prev = [max(range(K), key=lambda i: delta[i] + A[i][j]) for j in range(K)]
            delta = [delta[prev[j]] + A[prev[j]][j] + E[t][j] for j in range(K)]
            back.append(prev)
        tag = max(range(K), key=lambda j: delta[j] + e[j])
        path = [tag]
        for prev in reversed(back):
            tag = prev[tag]
            path.append(tag)
        out.append(path[::-1])
    return out


@pytest.mark.parametrize("impl", [ll_per_sequence, ll_backward_algorithm, ll_scaled_probabilities],
                         ids=lambda f: f.__name__)
def test_correct_log_likelihoods_in_other_styles_pass(impl):
    report = run(LL_EX, impl)
    assert report.passed, str(report)


def test_correct_viterbi_in_plain_python_passes():
    start = time.process_time()
    assert run(VIT_EX, viterbi_python_lists).passed
    assert time.process_time() - start < 1.0


def test_the_book_solutions_agree_with_the_oracles_on_random_batches(book):
    ns = book("sequences/crf")
    for seed in range(5):
        lengths = [5, 1 + seed % 5, 3]
        args, kwargs = crf_decl.crf_inputs(3, 5, 3, 100 + seed, lengths, dtype=f64)
        torch.testing.assert_close(ns[LL_EX](*args, **kwargs), crf_decl.crf_log_likelihood_oracle(*args, **kwargs))
        e, _, A, s, en = args
        assert ns[VIT_EX](e, A, s, en, **kwargs) == crf_decl.viterbi_oracle(e, A, s, en, **kwargs)


# =========================================================================== CRF: wrong code as candidates write it

def ll_last_tag_from_padding(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    """The end score of tags[:, -1], a padding tag for a short sequence."""
    ll = crf_decl._ll()(emissions, tags, transitions, start_transitions, end_transitions, mask)
    lengths = tags.shape[1] if mask is None else mask.sum(1)
    right = end_transitions[tags.gather(1, (torch.as_tensor(lengths) - 1).reshape(-1, 1).expand(len(tags), 1))[:, 0]]
    return ll - right + end_transitions[tags[:, -1]]


def ll_transitions_unmasked(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    """The mask applied to the emissions of the gold path, not to its transitions."""
    ll = crf_decl._ll()(emissions, tags, transitions, start_transitions, end_transitions, mask)
    if mask is None:
        return ll
    pair = transitions[tags[:, :-1], tags[:, 1:]]
    return ll + (pair * ~mask[:, 1:]).sum(1)


def ll_probability(*args, **kwargs):
    return crf_decl._ll()(*args, **kwargs).exp()


def ll_mean(*args, **kwargs):
    return crf_decl._ll()(*args, **kwargs).mean()


def ll_locally_normalised(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    """An MEMM: a softmax over the next tag at every step instead of one global normaliser."""
    B, T, K = emissions.shape
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
    idx = torch.arange(B)
    out = torch.log_softmax(start_transitions + emissions[:, 0], -1)[idx, tags[:, 0]]
    for t in range(1, T):
        step = torch.log_softmax(transitions[tags[:, t - 1]] + emissions[:, t], -1)[idx, tags[:, t]]
        out = out + step * mask[:, t]
    return out


def ll_in_float64(emissions, *args, **kwargs):
    return crf_decl._ll()(emissions.double(), *args, **kwargs)


def ll_in_place(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
    emissions[:, 0] += start_transitions                   # folds the start scores in, into the caller's tensor
    return crf_decl._ll(start=False)(emissions, tags, transitions, start_transitions, end_transitions, mask)


def viterbi_padded_with_zeros(emissions, transitions, start_transitions, end_transitions, mask=None):
    paths = crf_decl._vit()(emissions, transitions, start_transitions, end_transitions, mask)
    return [p + [0] * (emissions.shape[1] - len(p)) for p in paths]


def viterbi_tensors(emissions, transitions, start_transitions, end_transitions, mask=None):
    return [torch.tensor(p) for p in crf_decl._vit()(emissions, transitions, start_transitions, end_transitions, mask)]


def viterbi_best_delta_per_step(emissions, transitions, start_transitions, end_transitions, mask=None):
    """The argmax of delta at every step, read forwards, instead of following the back-pointers."""
    B, T, K = emissions.shape
    lengths = [T] * B if mask is None else mask.sum(1).tolist()
    delta, picks = start_transitions + emissions[:, 0], [(start_transitions + emissions[:, 0]).argmax(1)]
    for t in range(1, T):
        delta = (delta[:, :, None] + transitions).amax(1) + emissions[:, t]
        picks.append(delta.argmax(1))
    return [[int(picks[t][b]) for t in range(L)] for b, L in enumerate(lengths)]


def viterbi_tuples(*args, **kwargs):
    return [tuple(p) for p in crf_decl._vit()(*args, **kwargs)]


CRF_WRONG = [(LL_EX, ll_last_tag_from_padding, ("wrong-value",)), (LL_EX, ll_transitions_unmasked, ("wrong-value",)),
             (LL_EX, ll_probability, ("wrong-value",)), (LL_EX, ll_mean, ("wrong-shape",)),
             (LL_EX, ll_locally_normalised, ("wrong-value",)), (LL_EX, ll_in_float64, ("wrong-dtype",)),
             (LL_EX, ll_in_place, ("mutated-input",)),
             (VIT_EX, viterbi_padded_with_zeros, ("wrong-length",)), (VIT_EX, viterbi_tensors, ("wrong-type",)),
             (VIT_EX, viterbi_best_delta_per_step, ("wrong-value",)), (VIT_EX, viterbi_tuples, ("wrong-type",))]


@pytest.mark.parametrize("name,impl,kinds", CRF_WRONG, ids=[f.__name__ for _, f, _ in CRF_WRONG])
def test_wrong_crf_code_as_candidates_write_it_is_rejected(name, impl, kinds):
    report = run(name, impl)
    assert not report.passed, f"{impl.__name__} passes"
    assert report.kind in kinds, str(report)


def test_a_padding_end_score_is_caught_by_the_masked_case_and_not_misnamed():
    report = run(LL_EX, ll_last_tag_from_padding)
    assert "masked" in report.failure.note and report.failure.mistake is None, str(report)


# =========================================================================== CRF: bad input

def test_crf_bad_input_gives_a_clear_report():
    def raises(emissions, tags, transitions, start_transitions, end_transitions, mask=None):
        alpha = emissions[:, 0] + transitions                 # (B, K) + (K, K): broadcasts only when B == K
        return alpha.sum(1) + tags.shape[2]

    def nan(*args, **kwargs):
        return crf_decl._ll()(*args, **kwargs) * torch.nan

    def numpy(*args, **kwargs):
        return crf_decl._ll()(*args, **kwargs).detach().numpy()

    report = run(LL_EX, raises)
    assert report.kind == "exception" and report.failure.mistake is None
    assert "emissions[:, 0] + transitions" in report.failure.frame
    assert run(LL_EX, nan).kind == "not-finite"
    assert run(LL_EX, numpy).kind in ("returned-numpy", "wrong-type")
    assert run(LL_EX, lambda *a, **k: None).kind == "returned-none"
    assert run(VIT_EX, lambda *a, **k: None).kind in ("returned-none", "wrong-type")


class EndlessCell(lstm_decl._Cell):
    def forward(self, x, state=None):
        while True:
            x = x + 0


def endless(emissions, *args, **kwargs):
    while True:
        emissions = emissions + 0


@pytest.fixture
def quick_timeouts():
    exercises = [get(name) for name in (LSTM_EX, LL_EX, VIT_EX)]
    before = [ex.timeout for ex in exercises]
    for ex in exercises:
        ex.timeout = 0.5
    yield
    for ex, t in zip(exercises, before):
        ex.timeout = t


@pytest.mark.parametrize("name,impl", [(LSTM_EX, EndlessCell), (LL_EX, endless), (VIT_EX, endless)])
def test_endless_loops_are_stopped(quick_timeouts, name, impl):
    start = time.perf_counter()
    report = run(name, impl)
    assert time.perf_counter() - start < 10
    assert report.kind == "timeout"
