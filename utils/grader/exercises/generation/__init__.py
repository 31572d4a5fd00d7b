"""Exercise declarations of part 'generation', one module per chapter."""
