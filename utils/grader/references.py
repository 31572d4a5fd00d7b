"""Reference building blocks that several declarations' oracles share, written with PyTorch built-ins only.

An oracle that needs a piece another chapter grades (Part 9's experts are Part 5's SwiGLU) takes it from here,
so the piece is written once; it is never the book's solution.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class SwiGLUSpec(nn.Module):
    """Llama's feed-forward: w2(silu(w1 x) * w3 x), three bias-free nn.Linear (chapter llm/feed_forward)."""

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
