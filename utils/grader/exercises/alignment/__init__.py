"""Exercise declarations of part 'alignment', one module per chapter."""
