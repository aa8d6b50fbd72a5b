"""How many layers one spec file may list, checked on the raw document before the schema.

Schema validation costs about 0.6 ms per listed layer, so a file that the loader accepts
(1 MB, 100,000 YAML events: ``spec.load``) can list 15,000 layers and keep jsonschema busy
for about nine seconds before any error appears. This check counts the layers of the top
level and of every block first and refuses the file at once. The limit on layers after
blocks and repeats are expanded is ``passes.expand.MAX_LAYERS``; docs/errors.md lists both.
"""

from __future__ import annotations

from typing import Any

from ..diagnostics import Diagnostic
from .load import location_of

__all__ = ["MAX_LISTED_LAYERS", "check_listed_layers"]

#: Layers one spec file may list (top level plus every block). The largest spec in specs/
#: lists 54; schema validation of 2,000 takes about 1.2 s, of the 15,000 a 400 KB file can
#: hold about 9 s.
MAX_LISTED_LAYERS = 2_000


def check_listed_layers(doc: Any, file: str) -> list[Diagnostic]:
    """An error when a document lists more than :data:`MAX_LISTED_LAYERS` layers.

    Runs before schema validation: a file that the loader accepts (1 MB,
    100,000 YAML events) can list 15,000 layers, which jsonschema takes about
    nine seconds to check.
    """
    if not isinstance(doc, dict):
        return []
    lists: list[tuple[tuple, Any]] = [(("layers",), doc.get("layers"))]
    blocks = doc.get("blocks")
    if isinstance(blocks, dict):
        lists += [(("blocks", name, "layers"), b.get("layers"))
                  for name, b in blocks.items() if isinstance(b, dict)]
    total = sum(len(items) for _, items in lists if isinstance(items, list))
    if total <= MAX_LISTED_LAYERS:
        return []
    path, longest = max(((p, items) for p, items in lists if isinstance(items, list)),
                        key=lambda pair: len(pair[1]))
    return [Diagnostic(
        f"the file lists {total:,} layers, over the limit of {MAX_LISTED_LAYERS:,} "
        f"({'.'.join(map(str, path))} has {len(longest):,})", location_of(doc, path),
        hint="write repeated layers once, in a block used with 'repeat: n'")]
