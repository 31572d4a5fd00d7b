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
    InitExercise        a function that fills a weight in place from the global generator (nn.init): its law
    DistributedExercise a function run on every rank of a real gloo process group (1 to 4 forked processes)
    ExhaustiveExercise  a function of a die it is given (rand10 from rand6): its exact law, by walking every draw
    CountingExercise    a plain-value function whose comparisons are counted against a stated bound (top-k heap)
"""

from ..core import Exercise
from .counting import Counted, CountingExercise
from .distributed import DistributedExercise, Layer, OnGroup
from .driving import DrivingExercise, reproducible, samples_within
from .exhaustive import ExhaustiveExercise, Tree, Walk, explore, walk_to
from .gradients import GradientsExercise
from .init import InitExercise, Law
from .module import ModuleExercise, Script, Step, random_state
from .optimizer import OptimizerExercise, OptimizerRun, eager
from .plain import Method, PlainClassExercise, PlainExercise, Session, method
from .schedule import ScheduleExercise
from .stochastic import Draws, SamplingMistake, StochasticExercise, close_to, draws, index_names, indices
from .tiled import TiledExercise, Watched
from .training import Probe, Setup, TrainingExercise, WatchedLoss, classification_data, probe

__all__ = ["DistributedExercise", "Draws", "DrivingExercise", "Exercise", "GradientsExercise", "InitExercise", "Law",
           "Layer", "Method",
           "ModuleExercise", "OnGroup", "OptimizerExercise", "OptimizerRun", "PlainClassExercise", "PlainExercise",
           "Probe", "SamplingMistake", "ScheduleExercise", "Script", "Session", "Setup", "Step", "StochasticExercise",
           "TiledExercise", "TrainingExercise", "Watched", "WatchedLoss", "classification_data", "close_to", "draws",
           "eager", "index_names", "indices", "method", "probe", "random_state", "reproducible", "samples_within"]
__all__ += ["Counted", "CountingExercise", "ExhaustiveExercise", "Tree", "Walk", "explore", "walk_to"]
