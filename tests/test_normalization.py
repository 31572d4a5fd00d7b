"""What is specific to the normalization exercises (BatchNorm, LayerNorm, RMSNorm), beyond tests/test_exercises.py:
the oracles agree with PyTorch's modules (running statistics included), float64 cases really run in float64,
bad submissions are rejected for the right reason, and the properties catch the wrong implementations."""

import pytest
import torch
from torch import nn

from utils.grader.core import evaluate
from utils.grader.exercises.normalization import batch_norm as bn  # noqa: I001  (registers the exercises)
from utils.grader.exercises.normalization import layer_norm as ln
from utils.grader.registry import EXERCISES


def _ex(name):
    return EXERCISES[name]


def _randomize(*modules, seed=0):
    """Load the same random non-default weight, bias and running statistics into every module."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v for k, v in modules[0].state_dict().items() if k != "num_batches_tracked"}
    state = {k: torch.rand(v.shape, generator=gen, dtype=torch.float64).to(v.dtype) + 0.5 for k, v in state.items()}
    for m in modules:
        m.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------- the oracles against PyTorch

@pytest.mark.parametrize("builtin,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)),
                                           (nn.BatchNorm2d, (2, 3, 4, 5)), (nn.BatchNorm1d, (2, 3))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_norm_oracle_matches_torch(builtin, shape, dtype):
    spec = bn.BatchNormSpec(3, eps=1e-3, momentum=0.3).to(dtype)
    ref = builtin(3, eps=1e-3, momentum=0.3).to(dtype)
    _randomize(spec, ref)
    assert dict(spec.named_buffers()).keys() == {"running_mean", "running_var"}
    assert dict(spec.named_parameters()).keys() == {"weight", "bias"}
    gen = torch.Generator().manual_seed(1)
    for step, train in enumerate([True, True, False, True, False]):
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1).to(dtype)
        spec.train(train), ref.train(train)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = spec(x1), ref(x2)
        torch.testing.assert_close(y1, y2, msg=f"output differs at step {step}")
        torch.testing.assert_close(spec.running_mean, ref.running_mean, msg=f"running_mean at step {step}")
        torch.testing.assert_close(spec.running_var, ref.running_var, msg=f"running_var at step {step}")
        g = torch.randn(y1.shape, generator=gen, dtype=torch.float64).to(dtype)
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(spec.weight.grad, ref.weight.grad)
    torch.testing.assert_close(spec.bias.grad, ref.bias.grad)
    # the running variance really is the unbiased one: after one step from (0, 1) with momentum 1
    m = bn.BatchNormSpec(3, momentum=1.0)
    x = torch.randn(shape, generator=gen)
    m(x)
    dims = [0] + list(range(2, x.dim()))
    torch.testing.assert_close(m.running_var, x.var(dims, unbiased=True))


def test_norm_oracles_are_the_builtins_with_the_exercise_signatures():
    assert ln.RMSNormSpec(8).eps == 1e-6 and ln.RMSNormSpec(8, 1e-3).eps == 1e-3
    assert ln.LayerNormSpec(8).eps == 1e-5 and ln.LayerNormSpec((2, 3)).weight.shape == (2, 3)
    assert dict(ln.LayerNormSpec(4, 1e-5, False).named_parameters()) == {}
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ln.RMSNormSpec(8)(x), nn.RMSNorm(8, eps=1e-6)(x))
    torch.testing.assert_close(ln.LayerNormSpec((3, 8))(x), nn.LayerNorm((3, 8))(x))


def test_rmsnorm_default_eps_is_the_machine_epsilon_not_llamas():
    """What the chapter states: nn.RMSNorm's default eps is None, the machine epsilon of the computation type
    (float32 for float16/bfloat16/float32 inputs); 1e-6 is LLaMA's value, which the exercise passes explicitly."""
    assert nn.RMSNorm(8).eps is None and ln.RMSNormSpec(8).eps == 1e-6
    x = 1e-4 * torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    for dtype, compute in [(torch.float32, torch.float32), (torch.float64, torch.float64),
                           (torch.bfloat16, torch.float32)]:
        xs = x.to(dtype)
        want = torch.rms_norm(xs.to(compute), (8,), eps=torch.finfo(compute).eps).to(dtype)
        torch.testing.assert_close(nn.RMSNorm(8).to(dtype)(xs), want)
    assert not torch.allclose(nn.RMSNorm(8)(x), ln.RMSNormSpec(8)(x))


def test_mistake_bases_are_correct():
    """Each mistake overrides one piece of a base class; the bases themselves must pass."""
    for name, base in [("BatchNorm", bn._BN), ("LayerNorm", ln._LN), ("RMSNorm", ln._RMS)]:
        report = evaluate(_ex(name), base)
        assert report.passed, str(report)


def test_float64_cases_run_the_module_in_float64():
    for name in ("BatchNorm", "LayerNorm", "RMSNorm"):
        ex = _ex(name)
        typed = [i for i, c in enumerate(ex.all_cases()) if c.make().dtype == torch.float64]
        assert typed, f"{name} has no float64 case"
        out = ex.expected(typed[0])
        tensors = [v for _, v in out.parts if isinstance(v, torch.Tensor)]
        tensors += [t for _, v in out.parts if isinstance(v, dict) for t in v.values() if isinstance(t, torch.Tensor)]
        assert tensors and all(t.dtype == torch.float64 for t in tensors)


def test_cases_cover_what_the_issue_asks():
    notes = " ".join(c.note for c in _ex("BatchNorm").all_cases())
    for what in ("(N, C)", "(N, C, L)", "(N, C, H, W)", "tiny variance", "large offset", "batch of two",
                 "float64", "gradient in training mode", "gradient in eval mode", "momentum="):
        assert what in notes, what
    scripts = [c.make() for c in _ex("BatchNorm").all_cases()]
    assert max(len(s.steps) for s in scripts) >= 4
    assert any(not s.train for sc in scripts for s in sc.steps)
    notes = " ".join(c.note for c in _ex("LayerNorm").all_cases())
    for what in ("int normalized_shape", "tuple normalized_shape", "elementwise_affine=False", "tiny variance",
                 "large offset", "float64", "gradient"):
        assert what in notes, what
    assert len(_ex("BatchNorm").mistakes) >= 6
    assert len(_ex("LayerNorm").mistakes) >= 5 and len(_ex("RMSNorm").mistakes) >= 5


# --------------------------------------------------------------------------- bad submissions

def test_an_instance_is_not_a_class():
    report = evaluate(_ex("BatchNorm"), bn._BN(3))
    assert report.failure.problem.kind == "wrong-type" and "not an instance" in report.failure.problem.message


def test_wrapping_the_builtin_is_rejected():
    class Wrapped(nn.BatchNorm1d):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__(num_features, eps, momentum)

    report = evaluate(_ex("BatchNorm"), Wrapped)      # its num_batches_tracked is allowed; F.batch_norm is not
    assert report.failure.problem.kind == "forbidden-call", str(report)

    report = evaluate(_ex("BatchNorm"), bn.BatchNormSpec)         # the right buffers, but F.batch_norm inside
    assert report.failure.problem.kind == "forbidden-call", str(report)
    assert evaluate(_ex("LayerNorm"), ln.LayerNormSpec).failure.problem.kind == "forbidden-call"
    assert evaluate(_ex("RMSNorm"), ln.RMSNormSpec).failure.problem.kind == "forbidden-call"


def test_wrong_parameter_names_are_rejected():
    class GammaBeta(bn._BN):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__(num_features, eps, momentum)
            self.gamma, self.beta = self.weight, self.bias
            del self.weight, self.bias

        def affine(self, y):
            return y * bn._bc(self.gamma, y) + bn._bc(self.beta, y)

    report = evaluate(_ex("BatchNorm"), GammaBeta)
    assert not report.passed and report.failure.case == 0 and "gamma" in str(report)


def test_forgetting_the_running_statistics_is_diagnosed():
    class Forgets(bn._BN):
        def forward(self, x):                                    # uses batch statistics, never touches buffers
            return self.affine(self.normalize(x, *self.batch_stats(x)))

    report = evaluate(_ex("BatchNorm"), Forgets)
    assert not report.passed and report.failure.case == 0
    assert report.failure.problem.where.endswith("buffers['running_mean']"), str(report)


def test_a_module_that_ignores_train_and_eval_is_caught_in_eval():
    """Updates and uses running statistics correctly in training, but eval uses batch statistics."""
    report = evaluate(_ex("BatchNorm"), bn.BNEvalUsesBatchStats)
    assert "eval" in report.failure.problem.where


# --------------------------------------------------------------------------- properties catch what they claim

def _property(name, title):
    return next(p for p in _ex(name).properties if p.name.startswith(title))


def test_properties_pass_for_the_oracle_bases():
    for name, impl in [("BatchNorm", bn._BN), ("LayerNorm", ln._LN), ("RMSNorm", ln._RMS)]:
        for prop in _ex(name).properties:
            assert prop.check(impl) is None, (name, prop.name)


def test_properties_fail_for_specific_wrong_modules():
    assert "eval mode" in _property("BatchNorm", "in eval mode").check(bn.BNEvalUsesBatchStats)
    assert "fails" in _property("BatchNorm", "a state_dict").check(bn.BNPlainAttributes)
    assert "fails" in _property("LayerNorm", "a state_dict").check(ln.LNLastDimParameters)
    assert "differ" in _property("LayerNorm", "a state_dict").check(ln.LNUnbiased)
    assert "rows" in _property("LayerNorm", "each row").check(ln.LNBatchAxis)
    assert "fails" in _property("RMSNorm", "a state_dict").check(ln.RMSWithBias)


class BatchNormLikeTorch(bn._BN):
    """Faithful to nn.BatchNorm1d where the contract is silent: it also counts batches in num_batches_tracked."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def update(self, mean, var, n):
        super().update(mean, var, n)
        self.num_batches_tracked += 1


def test_a_batch_norm_faithful_to_pytorch_is_accepted():
    report = evaluate(EXERCISES["BatchNorm"], BatchNormLikeTorch)
    assert report.passed, str(report)


def test_running_statistics_with_autograd_history_are_named():
    class Leaky(bn._BN):
        def update(self, mean, var, n):            # reassigned from statistics that are part of the graph
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var * n / (n - 1)

        def forward(self, x):
            if not self.training:
                return super().forward(x)
            mean, var = self.batch_stats(x)
            self.update(mean, var, x.numel() // x.shape[1])
            return self.affine(self.normalize(x, mean, var))

    report = evaluate(EXERCISES["BatchNorm"], Leaky)
    assert not report.passed
    assert "autograd history" in report.failure.problem.where, str(report)
