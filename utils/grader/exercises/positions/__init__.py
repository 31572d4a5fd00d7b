"""Exercise declarations of part 'positions', one module per chapter."""
