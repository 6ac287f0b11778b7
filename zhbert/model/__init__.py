"""Stage 2, the model: BERT with HF names (modeling), weight loading (weights), unpadding, CPU ops."""
