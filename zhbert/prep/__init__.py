"""Stage 1, data preparation: corpus -> tokenizer -> segment (+ fastcut) -> instances -> prepare
(which writes the instance format of ``format``)."""
