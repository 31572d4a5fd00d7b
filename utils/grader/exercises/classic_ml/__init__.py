"""Exercise declarations of part 'classic_ml', one module per chapter."""
