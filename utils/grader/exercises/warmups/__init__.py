"""Exercise declarations of part 'warmups', one module per chapter."""
