"""Pretrained weights: one reader, one strict loader, one report and one error, plus declared layouts.

* :mod:`.report` (no torch): :class:`WeightsReport` and :class:`WeightsError`, the one error every
  weight route raises.
* :mod:`.files`: :func:`read_state_dict`, the one reader (torch files and ``.safetensors``, nested
  ``state_dict``/``model``/``state_dict_ema`` entries, ``weights_only=True``).
* :mod:`.load`: :func:`load_weights` and the comparison :func:`~.load.fit` behind every load.
* :mod:`.mapping` (no torch): the ``weights:`` layouts encoder, meta and model specs declare, from
  any source, what ``SOURCE:NAME`` means for one model, and the ``SOURCE:NAME[@PATH]`` syntax,
  checked by ``rtsegc validate``.
* :mod:`.importer`: a checkpoint renamed through a declared layout.

Importing this package does not import torch; the torch-side names load on first use.
See docs/weights.md.
"""

from typing import Any

from .mapping import (FETCHABLE, SOURCES, Layout, ModelLayout, Rule, WeightSource, WeightSourceError,
                      check_weights, is_source_text, parse_layouts, parse_source, resolve_layout)
from .report import WeightsError, WeightsReport

__all__ = ["FETCHABLE", "SOURCES", "Layout", "ModelLayout", "Rule", "WeightSource", "WeightSourceError",
           "WeightsError", "WeightsReport", "check_weights", "import_weights", "is_source_text",
           "load_weights", "parse_layouts", "parse_source", "read_state_dict", "resolve_layout"]

_TORCH_SIDE = {"load_weights": ".load", "read_state_dict": ".files", "import_weights": ".importer"}


def __getattr__(name: str) -> Any:
    if name in _TORCH_SIDE:
        from importlib import import_module

        return getattr(import_module(_TORCH_SIDE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
