"""Hand-Written LLM (手撕大模型): the helpers every chapter imports.

    from utils import check, progress
"""

__book__ = "hand-written-llm"

from .configs import TransformerConfig  # noqa: E402
from .grader import CheckFailed, check, list_exercises, run  # noqa: E402
from .progress_table import progress  # noqa: E402

__all__ = ["CheckFailed", "TransformerConfig", "check", "list_exercises", "progress", "run"]
