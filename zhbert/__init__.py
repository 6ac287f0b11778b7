"""zhbert: Chinese BERT pretraining pipeline."""

__version__ = "0.1.0"

# The model classes import torch; load them on first use so `import zhbert` (CLI start-up,
# data-preparation workers) stays cheap.
_LAZY = {"BertConfig", "BertForPreTraining", "BertForSequenceClassification", "BertModel"}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name):
    if name in _LAZY:
        from zhbert import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'zhbert' has no attribute {name!r}")
