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
    PlainExercise       a function of plain Python values (ints, strings, bytes, lists, dicts), compared exactly
    PlainClassExercise  a class of plain values driven through a session of method calls (a tokenizer)
    StochasticExercise  a function that draws with a `generator`: exact laws, count tests with stated bounds
    DistributedExercise a function run on every rank of a real gloo process group (1 to 4 forked processes)
"""

from ..core import Exercise
from .distributed import DistributedExercise, Layer, OnGroup
from .driving import DrivingExercise, reproducible, samples_within
from .gradients import GradientsExercise
from .module import ModuleExercise, Script, Step, random_state
from .optimizer import OptimizerExercise, OptimizerRun, eager
from .plain import Method, PlainClassExercise, PlainExercise, Session, method
from .schedule import ScheduleExercise
from .stochastic import Draws, SamplingMistake, StochasticExercise, close_to, draws, index_names, indices
from .tiled import TiledExercise, Watched
from .training import Probe, Setup, TrainingExercise, WatchedLoss, classification_data, probe

__all__ = ["DistributedExercise", "Draws", "DrivingExercise", "Exercise", "GradientsExercise", "Layer", "Method",
           "ModuleExercise", "OnGroup", "OptimizerExercise", "OptimizerRun", "PlainClassExercise", "PlainExercise",
           "Probe", "SamplingMistake", "ScheduleExercise", "Script", "Session", "Setup", "Step", "StochasticExercise",
           "TiledExercise", "TrainingExercise", "Watched", "WatchedLoss", "classification_data", "close_to", "draws",
           "eager", "index_names", "indices", "method", "probe", "random_state", "reproducible", "samples_within"]
