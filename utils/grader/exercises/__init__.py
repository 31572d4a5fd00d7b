"""Exercise declarations, one module per part of the book. Adding an exercise adds a declaration here."""
