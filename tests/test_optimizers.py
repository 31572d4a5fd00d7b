"""The optimizers chapter's grader: what the generic tests in test_exercises.py do not cover.

The oracles of SGD / Adam / AdamW are torch.optim classes run eagerly (their own step body without the
torch.compile wrappers): a test proves they agree with torch.optim bit for bit on every case. The mistakes are
built on small single-tensor optimizers (`_SGD`, `_Adam`, `_AdamW`) that must themselves pass, so that each
mistake differs from a correct optimizer by its one override. cosine_lr's oracle is a plain formula: it is
checked against PyTorch's schedulers. The custom drivers (schedule, clipping) and the guards against the built-ins
are checked here too.
"""

import math

import pytest
import torch

import utils.grader.exercises.foundations.optimizers as opt
from utils.grader import get, run

# --------------------------------------------------------------------------- the oracles are torch.optim, bit for bit

@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_eager_oracle_is_the_builtin_bit_for_bit(name):
    import sys

    from utils.grader.compare import same
    ex = get(name)
    builtin = getattr(torch.optim, name)
    assert issubclass(ex.oracle, builtin) and ex.oracle is not builtin
    for i, case in enumerate(ex.all_cases()):
        ours, theirs = ex.outcome(ex.oracle, case, None), ex.outcome(builtin, case, None)
        assert ours.error is None and theirs.error is None
        assert [label for label, _ in ours.parts] == [label for label, _ in theirs.parts]
        assert same([v for _, v in ours.parts], [v for _, v in theirs.parts], rtol=0, atol=0), f"{name} case {i}"
    assert "torch._dynamo" in sys.modules       # the built-in's step imports it; the eager oracle does not need to


def test_a_first_optimizer_check_does_not_import_dynamo():
    import subprocess
    import sys
    code = ("import sys, time, torch\n"
            "from utils.grader import run\n"
            "from utils.notebook import load_solutions\n"
            "impl = load_solutions('foundations/optimizers')['Adam']\n"
            "t = time.perf_counter(); r = run('Adam', impl); t = time.perf_counter() - t\n"
            "assert r.passed, str(r)\n"
            "print('torch._dynamo' in sys.modules, round(t, 2))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    assert out[0] == "False", "a check of an optimizer imported torch._dynamo (about 2 s in a fresh kernel)"


# --------------------------------------------------------------------------- the mistakes' skeletons are correct

@pytest.mark.parametrize("name,skeleton", [("SGD", opt._SGD), ("Adam", opt._Adam), ("AdamW", opt._AdamW)])
def test_mistake_skeleton_passes(name, skeleton):
    report = run(name, skeleton)
    assert report.passed, str(report)


def test_skeleton_defaults_follow_the_signatures():
    p = torch.zeros(2, requires_grad=True)
    assert opt._Adam([p]).defaults["weight_decay"] == 0.0
    assert opt._AdamW([p]).defaults["weight_decay"] == 0.01
    assert torch.optim.AdamW([p]).defaults["weight_decay"] == 0.01


# --------------------------------------------------------------------------- the cases test what they claim

@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_cases_cover_groups_missing_grads_and_decay(name):
    runs = [c.make() for c in get(name).all_cases()]
    assert any(len(r.groups) > 1 and set(r.groups[1]) - {"params"} for r in runs), "no group overrides"
    assert any(r.hyper.get("weight_decay", 0) > 0 for r in runs)
    assert max(r.steps for r in runs) >= 100
    assert {r.params[0].dtype for r in runs} == {torch.float32, torch.float64}
    missing = [(t, i) for r in runs for t in range(1, r.steps + 1) for i in range(len(r.params))
               if r.grad(t, i, r.params[i]) is None]
    assert any(i == 2 for _, i in missing) and any(i == 1 for _, i in missing), "no parameter without gradient"


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tiny_gradient_cases_make_eps_matter(name):
    """In the tiny-gradient cases |g| is comparable to eps, so eps changes the first step by a visible amount."""
    tiny = [c.make() for c in get(name).all_cases() if "tiny" in c.note]
    assert len(tiny) >= 2
    for r in tiny:
        eps = r.hyper.get("eps", 1e-8)
        g = r.grad(1, 0, r.params[0]).abs()
        assert 0.1 * eps < g.median() < 100 * eps


def test_gradients_feed_back_on_the_parameters():
    """The gradient depends on the current value, so an early mistake changes every later gradient."""
    r = get("Adam").all_cases()[0].make()
    g0 = r.grad(3, 0, r.params[0])
    g1 = r.grad(3, 0, r.params[0] + 1.0)
    assert not torch.allclose(g0, g1)
    assert torch.equal(g0, r.grad(3, 0, r.params[0].clone())), "gradients must be deterministic"


def test_schedule_cases_hit_both_boundaries_and_run_past_the_end():
    for c in get("cosine_lr").all_cases():
        hyper, steps, _ = c.make()
        assert steps == list(range(steps[0], steps[-1] + 1)), "every step, in order"
        assert steps[0] == 0
        assert hyper["warmup_steps"] in steps and hyper["total_steps"] in steps
        assert steps[-1] > hyper["total_steps"]
    warmups = {c.make()[0]["warmup_steps"] for c in get("cosine_lr").all_cases()}
    assert 0 in warmups and 1 in warmups


def test_clip_cases_include_no_clipping_and_clipping():
    ex = get("clip_grad_norm_")
    factors = []
    for c in ex.all_cases():
        _, grads, max_norm, _ = c.make()
        total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))
        factors.append(max_norm / (total + 1e-6))
        assert sum(g is not None for g in grads) >= 1
    assert any(f >= 1 for f in factors) and any(f < 1 for f in factors)
    assert sum(len(c.make()[1]) >= 3 for c in ex.all_cases()) >= 2, "clipping across several tensors"


# --------------------------------------------------------------------------- the cosine oracle is the formula

def _torch_warmup_cosine(max_lr, min_lr, warmup, total, after):
    """The same schedule from PyTorch's schedulers: linear warmup by hand, then CosineAnnealingLR's closed form."""
    p = torch.zeros(1, requires_grad=True)
    sgd = torch.optim.SGD([p], lr=max_lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=total - warmup, eta_min=min_lr)
    lrs = [max_lr * s / warmup for s in range(warmup)]
    for k in range(0, total - warmup + 1):
        cosine.last_epoch = k
        lrs.append(cosine._get_closed_form_lr()[0])
    return lrs + [min_lr] * after


@pytest.mark.parametrize("hyper", [(6e-4, 6e-5, 10, 100), (1.0, 0.1, 5, 30), (3e-4, 0.0, 0, 50), (2.0, 0.5, 8, 9)])
def test_cosine_spec_matches_pytorch_schedulers(hyper):
    expected = _torch_warmup_cosine(*hyper, after=7)
    got = [opt.cosine_lr_spec(s, *hyper) for s in range(len(expected))]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_spec_boundaries():
    assert opt.cosine_lr_spec(0, 1.0, 0.1, 10, 50) == 0.0
    assert opt.cosine_lr_spec(10, 1.0, 0.1, 10, 50) == 1.0
    assert opt.cosine_lr_spec(50, 1.0, 0.1, 10, 50) == pytest.approx(0.1, abs=1e-15)
    assert opt.cosine_lr_spec(51, 1.0, 0.1, 10, 50) == 0.1
    assert opt.cosine_lr_spec(30, 1.0, 0.1, 10, 50) == pytest.approx(0.55)


# --------------------------------------------------------------------------- bad inputs

def test_instance_instead_of_class_is_rejected():
    p = torch.zeros(2, requires_grad=True)
    report = run("SGD", torch.optim.SGD([p], lr=0.1))
    assert not report.passed and report.kind == "wrong-type"
    assert "optimizer class" in report.failure.problem.message


def test_module_instead_of_optimizer_is_rejected():
    report = run("Adam", torch.nn.Linear)
    assert not report.passed and report.kind == "wrong-type"


def test_subclass_of_the_builtin_is_rejected():
    class Adam(torch.optim.Adam):
        pass

    report = run("Adam", Adam)
    assert not report.passed and report.kind == "wrong-type"
    assert "torch.optim.adam.Adam" in report.failure.problem.message


def test_delegating_to_the_builtin_is_a_forbidden_call():
    class AdamW(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
            self.inner = torch.optim.AdamW(self.param_groups)

        def step(self, closure=None):
            return self.inner.step(closure)

    report = run("AdamW", AdamW)
    assert not report.passed and report.kind == "forbidden-call"
    assert "torch.optim.adam" in report.failure.problem.message
    p = torch.zeros(3, requires_grad=True)   # the built-in works again after the check
    p.grad = torch.ones(3)
    torch.optim.AdamW([p], lr=0.1).step()
    assert p[0] < 0


def test_clip_calling_the_builtin_is_forbidden_and_restored():
    builtin = torch.nn.utils.clip_grad_norm_
    report = run("clip_grad_norm_", lambda params, max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm))
    assert not report.passed and report.kind == "forbidden-call"
    assert torch.nn.utils.clip_grad_norm_ is builtin
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.full((3,), 10.0)
    assert float(torch.nn.utils.clip_grad_norm_([p], 1.0)) == pytest.approx(math.sqrt(300))


def test_clip_forgetting_return_is_reported():
    def clip(parameters, max_norm):
        for p in parameters:
            p.grad.mul_(0.5)            # no return statement

    report = run("clip_grad_norm_", clip)
    assert not report.passed and report.kind == "returned-none"


def test_clip_changing_parameter_values_is_caught():
    def clip(parameters, max_norm):
        params = list(parameters) if not isinstance(parameters, torch.Tensor) else [parameters]
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(coef)
                    p.mul_(coef)            # wrong: scales the weights too
        return total

    report = run("clip_grad_norm_", clip)
    assert not report.passed and report.kind == "mutated-input"


def test_optimizer_raising_mid_run_names_the_step():
    class SGD(opt._SGD):
        def step(self, closure=None):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return super().step(closure)

    report = run("SGD", SGD)
    assert not report.passed and report.kind == "exception"
    assert "step 3" in report.failure.problem.message


def test_schedule_returning_nan_is_not_finite():
    report = run("cosine_lr", lambda step, max_lr, min_lr, warmup_steps, total_steps: float("nan"))
    assert not report.passed and report.kind == "wrong-value"


# --------------------------------------------------------------------------- properties fail for wrong code

def test_bounds_property_rejects_a_schedule_below_min_lr():
    assert opt._within_bounds(opt.cosine_lr_spec) is None
    assert "outside" in opt._within_bounds(opt.cos_to_zero)


def test_idempotence_property_rejects_clipping_to_the_wrong_norm():
    def clip_to_double(parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, 2 * max_norm)

    assert opt._idempotent(torch.nn.utils.clip_grad_norm_) is None
    assert "norm" in opt._idempotent(clip_to_double)


def test_book_solutions_finish_quickly(book):
    ns = book("foundations/optimizers")
    for name in ("SGD", "Adam", "AdamW", "cosine_lr", "clip_grad_norm_"):
        run(name, ns[name])                   # first run: imports, oracle outcomes cached
        report = run(name, ns[name])
        assert report.passed and report.seconds < 5, f"{name}: {report.seconds:.2f} s"


def test_first_optimizer_of_a_session_survives_the_time_limit():
    """Optimizer.__init__ imports torch._dynamo the first time (seconds on a loaded machine). Interrupting that
    import half-way would break every optimizer for the rest of the session (seen once in a notebook run), so the
    time limit waits for imports to finish before it stops the reader's code."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from utils.grader.sandbox import TimeLimitExceeded, time_limit\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "p = torch.zeros(3, requires_grad=True)\n"
        "constructed = False\n"
        "try:\n"
        "    with time_limit(0.001):\n"
        "        torch.optim.SGD([p], lr=0.1)\n"
        "        constructed = True\n"
        "        while True:\n"
        "            pass\n"
        "except TimeLimitExceeded:\n"
        "    pass\n"
        "assert constructed, 'the time limit interrupted the import inside Optimizer.__init__'\n"
        "p.grad = torch.ones(3)\n"
        "torch.optim.SGD([p], lr=0.1).step()\n"
        "assert torch.equal(p.detach(), torch.full((3,), -0.1)), p\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
