"""zhbert: Chinese BERT pretraining pipeline.

The packages follow the pipeline (docs/DESIGN.md has the import rule and the contracts)::

    zhbert/prep/    corpus -> tokenizer -> segment (+ fastcut) -> instances -> prepare
    zhbert/model/   modeling (BERT, HF names), weights, padding, cpu_ops
    zhbert/train/   masking, collator, order (per-rank data order), ds_config, trainer, checkpoint, plot
    zhbert/hub/     checkpoints by name: registry, downloads, archives, the one name/dir resolver
    zhbert/clue/    CLUE fine-tuning and scoring
    release.py      release bundles (the last stage: weights + model card + CLUE results)
    config.py  errors.py  files.py  cache.py  cli.py   shared by all stages
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# The model classes import torch; load them on first use so `import zhbert` (CLI start-up,
# data-preparation workers) stays cheap.
_LAZY = {"BertConfig", "BertForPreTraining", "BertForSequenceClassification", "BertForQuestionAnswering",
         "BertForMultipleChoice", "BertModel"}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name):
    if name in _LAZY:
        from zhbert.model import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'zhbert' has no attribute {name!r}")


# Module paths of zhbert 0.1 (one flat package) -> where the code lives now. Importing an old
# path still works for one release (it is the same module object, so monkeypatching and
# private names behave as before) and warns once.
MOVED = {
    "corpus": "prep.corpus", "tokenizer": "prep.tokenizer", "segment": "prep.segment", "fastcut": "prep.fastcut",
    "instances": "prep.instances", "prepare": "prep.prepare",
    "modeling": "model.modeling", "weights": "model.weights", "padding": "model.padding", "cpu_ops": "model.cpu_ops",
    "masking": "train.masking", "collator": "train.collator", "data": "train.order", "ds_config": "train.ds_config",
    "checkpoint": "train.checkpoint", "trainer": "train.trainer", "plot": "train.plot",
    "hub": "hub",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``zhbert.<old name>`` to its new module (deprecated; removed in 0.3)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.partition(".")
        if prefix != "zhbert" or old not in MOVED or MOVED[old] == old:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        old = spec.name.split(".", 1)[1]
        new = f"zhbert.{MOVED[old]}"
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in zhbert 0.3",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
