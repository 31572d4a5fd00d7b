"""Hand-Written LLM (手撕大模型): the helpers every chapter imports.

    from utils import check, hint, progress
    utils.set_language("zh")     # reports, hints and progress in Chinese (or HWLLM_LANG=zh)
"""

__book__ = "hand-written-llm"

from .configs import TransformerConfig  # noqa: E402
from .grader import CheckFailed, check, list_exercises, run  # noqa: E402
from .hints import hint  # noqa: E402
from .i18n import set_language  # noqa: E402
from .progress_table import progress  # noqa: E402

__all__ = ["CheckFailed", "TransformerConfig", "check", "hint", "list_exercises", "progress", "run", "set_language"]
