"""Exercise declarations of part 'normalization', one module per chapter."""
