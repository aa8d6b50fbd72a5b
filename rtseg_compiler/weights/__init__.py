"""Pretrained weights: layouts declared in encoder specs (torch-free), imported by ``importer``.

``mapping`` parses and checks the ``weights:`` declarations and the ``SOURCE:NAME[@PATH]`` syntax
without torch, so ``rtsegc validate`` checks them; ``importer`` (torch) reads, renames and loads.
See docs/weights.md.
"""

from .mapping import (SOURCES, Layout, Rule, WeightSource, WeightSourceError, check_weights,
                      is_source_text, parse_layouts, parse_source)

__all__ = ["SOURCES", "Layout", "Rule", "WeightSource", "WeightSourceError", "check_weights",
           "is_source_text", "parse_layouts", "parse_source"]
