"""zhbert: Chinese BERT pretraining pipeline."""

__version__ = "0.1.0"
