"""Exercise declarations of part 'sequences', one module per chapter."""
