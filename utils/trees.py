"""Walk nested results: the tensors inside tuples, lists and dicts (used by the grader and the meters)."""

from __future__ import annotations

import torch


def tensors_in(obj) -> list:
    """Every tensor inside nested tuples, lists and dicts, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in tensors_in(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors_in(o)]
    return []
