"""The book's parts and chapters in reading order, for a package installed without the book beside it.

Generated from _toc.yml by `make generate`; do not edit."""

PARTS = (
    ('Part 1: foundations', (
        'foundations/softmax',
        'foundations/losses',
        'foundations/activations',
        'foundations/optimizers',
    )),
    ('Part 2: normalization', (
        'normalization/batch_norm',
        'normalization/layer_norm',
    )),
    ('Part 3: attention', (
        'attention/self_attention',
        'attention/scaled_dot_product_attention',
        'attention/multi_head_attention',
        'attention/grouped_query_attention',
        'attention/flash_attention',
    )),
    ('Part 4: positions', (
        'positions/absolute_positions',
        'positions/relative_positions',
        'positions/rope',
    )),
    ('Part 5: build an LLM', (
        'llm/feed_forward',
        'llm/transformer_block',
        'llm/causal_lm',
    )),
    ('Part 6: scale math', (
        'scale/parameter_count',
        'scale/flops',
        'scale/training_memory',
        'scale/inference_memory',
    )),
    ('Part 7: generation', (
        'generation/sampling',
        'generation/decoding',
        'generation/speculative_decoding',
    )),
    ('Part 8: tokenization', (
        'tokenization/bpe',
    )),
    ('Part 9: efficient fine-tuning and inference', (
        'efficiency/lora',
        'efficiency/quantization',
        'efficiency/moe',
        'efficiency/kv_cache_systems',
    )),
    ('Part 10: alignment', (
        'alignment/dpo',
        'alignment/ppo_grpo',
    )),
    ('Part 11: classic machine learning', (
        'classic_ml/linear_regression',
        'classic_ml/logistic_regression',
        'classic_ml/kmeans',
        'classic_ml/metrics',
        'classic_ml/training_loop',
    )),
    ('Part 12: vision', (
        'vision/conv2d',
        'vision/detection',
    )),
    ('Part 13: sequences', (
        'sequences/lstm',
        'sequences/crf',
    )),
    ('Part 14: distributed training', (
        'distributed/all_reduce',
        'distributed/parallelism',
    )),
    ('Part 15: coding warm-ups', (
        'warmups/warmups',
    )),
)
