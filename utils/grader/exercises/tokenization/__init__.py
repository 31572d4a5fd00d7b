"""Exercise declarations of part 'tokenization', one module per chapter."""
