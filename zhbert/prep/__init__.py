"""Stage 1, data preparation: corpus -> tokenizer -> segment (+ fastcut) -> instances -> prepare."""
