"""The kinds of exercise, each a subclass of `core.Exercise` driving its targets through the protocol
of `protocol.py` (Outcome, attempt, gradients, describe).

    Exercise            a function of tensors (core.py)
    ModuleExercise      an nn.Module class: construction, random weights, train/eval scripts, backward
    OptimizerExercise   a torch.optim.Optimizer class, driven as training code drives it
    ScheduleExercise    a function of the step, called over a whole schedule
    GradientsExercise   a function that edits parameters' .grad in place (clip_grad_norm_)
    TiledExercise       a function whose intermediates must stay within tiles (FlashAttention)
    DrivingExercise     a function that drives a scripted model (generate, beam search); its calls compared
    TrainingExercise    a training / evaluation loop run on identical copies of a model, data and optimizer
"""

from ..core import Exercise
from .driving import DrivingExercise, reproducible, samples_within
from .gradients import GradientsExercise
from .module import ModuleExercise, Script, Step, random_state
from .optimizer import OptimizerExercise, OptimizerRun, eager
from .schedule import ScheduleExercise
from .tiled import TiledExercise, Watched
from .training import Probe, Setup, TrainingExercise, WatchedLoss, classification_data, probe

__all__ = ["DrivingExercise", "Exercise", "GradientsExercise", "ModuleExercise", "OptimizerExercise",
           "OptimizerRun", "Probe", "ScheduleExercise", "Script", "Setup", "Step", "TiledExercise",
           "TrainingExercise", "Watched", "WatchedLoss", "classification_data", "eager", "probe", "random_state",
           "reproducible", "samples_within"]
