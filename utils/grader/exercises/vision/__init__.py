"""Exercise declarations of part 'vision', one module per chapter."""
