"""Exercise declarations of part 'efficiency' (efficient fine-tuning and inference), one module per chapter."""
