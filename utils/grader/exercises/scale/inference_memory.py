"""Part 6, scale: inference memory, the KV cache (chapter scale/inference_memory).

The oracle allocates nothing big: it builds the cache of one layer as a real tensor pair on the meta
device, shaped as transformers' DynamicCache stores it, (batch, kv_heads, seq, head_dim) for K and for V,
and multiplies its element count by the layers and the bytes per element.
"""

from __future__ import annotations

import torch

from ....i18n import msg
from ...core import Case, Exercise, Mistake, Property
from ...inputs import call
from ...registry import register


def _oracle(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    k = torch.empty(batch_size, num_kv_heads, seq_len, head_dim, device="meta")
    v = torch.empty(k.shape, device="meta")       # (not empty_like: on meta it imports sympy, 0.7 s)
    return num_layers * (k.numel() + v.numel()) * bytes_per_element


def _args(*args, **kwargs):
    return lambda: call(*args, **kwargs)


def _cases():
    return [
        Case(_args(1, 4096, 32, 32, 128), "Llama-2-7B, one sequence of 4k, fp16"),
        Case(_args(1, 4096, 32, 8, 128), "Llama-3-8B / Mistral-7B: GQA, 8 KV heads"),
        Case(_args(8, 32768, 28, 4, 128, 2), "Qwen2.5-7B, batch 8 at 32k"),
        Case(_args(4, 1024, 12, 12, 64, bytes_per_element=1), "GPT-2, int8 cache (keyword)"),
        Case(_args(2, 128, 2, 1, 16, 4), "multi-query attention, fp32"),
        Case(_args(3, 5, 7, 2, 8, 0.5), "4-bit cache: half a byte per element"),
        Case(_args(1, 1, 1, 1, 1), "one of everything"),
        Case(_args(16, 131072, 32, 8, 128), "Llama-3-8B at 128k, batch 16"),
        Case(_args(batch_size=5, seq_len=300, num_layers=3, num_kv_heads=2, head_dim=32), "all keywords"),
    ]


def kv_no_factor_2(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def kv_bits(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 8 * 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def kv_one_layer(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * batch_size * seq_len * num_kv_heads * head_dim * bytes_per_element


def kv_no_batch(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def kv_fixed_two_bytes(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * 2


def kv_elements(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2 * batch_size * seq_len * num_layers * num_kv_heads * head_dim


def kv_float(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2):
    return 2.0 * batch_size * seq_len * num_layers * num_kv_heads * head_dim * bytes_per_element


def _linear_in_context(call):
    a, b = call(2, 1000, 4, 2, 64), call(2, 2000, 4, 2, 64)
    if b != 2 * a:
        return msg("twice the context should take twice the cache; got {a} and {b}", a=a, b=b)
    return None


register(Exercise(
    name="kv_cache_bytes",
    chapter="scale/inference_memory",
    signature="kv_cache_bytes(batch_size, seq_len, num_layers, num_kv_heads, head_dim, bytes_per_element=2)",
    oracle=_oracle,
    cases=_cases,
    properties=[Property("the cache grows linearly with the context", _linear_in_context)],
    hints=(
        "count what one layer stores for one token of one sequence, then multiply by everything that repeats "
        "it   (eq. im-kv)",
        "each layer caches a K and a V tensor of shape (batch_size, num_kv_heads, seq_len, head_dim); multiply "
        "the element count by bytes_per_element last, without converting ints to float",
        "2 (K and V) * batch * seq_len * layers * kv_heads * head_dim * bytes_per_element   (eq. im-kv)",
    ),
    mistakes=[
        Mistake("forgot K and V", kv_no_factor_2,
                "the cache holds keys AND values: two tensors of batch x kv_heads x seq_len x head_dim per layer, "
                "a factor 2."),
        Mistake("bits, not bytes", kv_bits,
                "you returned bits: bytes_per_element already says how many bytes one number takes."),
        Mistake("one layer", kv_one_layer,
                "every layer has its own K and V cache: multiply by num_layers."),
        Mistake("forgot the batch", kv_no_batch,
                "every sequence in the batch has its own cache: multiply by batch_size."),
        Mistake("always two bytes", kv_fixed_two_bytes,
                "you assumed fp16: use bytes_per_element (4 for fp32, 1 for int8, 0.5 for 4 bits)."),
        Mistake("elements, not bytes", kv_elements,
                "you counted elements: multiply by bytes_per_element."),
        Mistake("float for an exact count", kv_float,
                "with whole bytes per element the size is an exact int: don't multiply by 2.0 (return an int)."),
    ],
))
