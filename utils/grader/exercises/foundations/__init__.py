"""Exercise declarations of part 'foundations', one module per chapter."""
