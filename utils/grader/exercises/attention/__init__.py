"""Exercise declarations of part 'attention', one module per chapter."""
