"""Compiler passes in pipeline order: expand, link, infer_shapes, count (check between them)."""

from .check import check, check_resolved
from .count import Audit, LayerAudit, count
from .expand import expand_encoder, expand_meta_alone, expand_model
from .link import link
from .shapes import infer_shapes

__all__ = ["Audit", "LayerAudit", "check", "check_resolved", "count", "expand_encoder",
           "expand_meta_alone", "expand_model", "infer_shapes", "link"]
