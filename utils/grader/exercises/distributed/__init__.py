"""Exercise declarations of part 'distributed', one module per chapter."""
