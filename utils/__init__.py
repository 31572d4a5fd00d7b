"""Hand-Written LLM (手撕大模型): the helpers every chapter imports.

    from utils import check, hint, progress
    utils.set_language("zh")     # reports, hints and progress in Chinese (or HWLLM_LANG=zh)
    utils.interview()            # a mock interview: a prompt, a cell with the signature only, a clock; utils.submit()
    utils.drill()                # find the bug in a candidate's answer; utils.submit() the fix
    utils.question_map()         # every interview question, its chapter and your status of its exercises
"""

__book__ = "hand-written-llm"

from .configs import TransformerConfig  # noqa: E402
from .grader import CheckFailed, check, list_exercises, run  # noqa: E402
from .hints import hint  # noqa: E402
from .i18n import set_language  # noqa: E402
from .progress_table import progress  # noqa: E402
from .question_map import question_map  # noqa: E402


def __getattr__(name):
    """utils.interview, utils.drill, utils.submit: imported on first use, so that `python -m utils.practice` runs the
    module once (not after `import utils` imported it already)."""
    if name in ("interview", "drill", "submit"):
        from . import practice
        return getattr(practice, name)
    raise AttributeError(f"module 'utils' has no attribute {name!r}")


__all__ = ["CheckFailed", "TransformerConfig", "check", "drill", "hint", "interview", "list_exercises", "progress",
           "question_map", "run", "set_language", "submit"]
