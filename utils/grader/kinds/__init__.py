"""The kinds of exercise, each a subclass of `core.Exercise` driving its targets through the protocol
of `protocol.py` (Outcome, attempt, gradients, describe).

    Exercise            a function of tensors (core.py)
    ModuleExercise      an nn.Module class: construction, random weights, train/eval scripts, backward
    OptimizerExercise   a torch.optim.Optimizer class, driven as training code drives it
    ScheduleExercise    a function of the step, called over a whole schedule
    GradientsExercise   a function that edits parameters' .grad in place (clip_grad_norm_)
    TiledExercise       a function whose intermediates must stay within tiles (FlashAttention)
"""

from ..core import Exercise
from .gradients import GradientsExercise
from .module import ModuleExercise, Script, Step, random_state
from .optimizer import OptimizerExercise, OptimizerRun
from .schedule import ScheduleExercise
from .tiled import TiledExercise, Watched

__all__ = ["Exercise", "GradientsExercise", "ModuleExercise", "OptimizerExercise", "OptimizerRun",
           "ScheduleExercise", "Script", "Step", "TiledExercise", "Watched", "random_state"]
