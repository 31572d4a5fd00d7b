"""Exercise declarations of part 'llm' (build an LLM), one module per chapter."""
