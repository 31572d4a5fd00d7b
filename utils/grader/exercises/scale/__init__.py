"""Exercise declarations of part 'scale', one module per chapter."""
