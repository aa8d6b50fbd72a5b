"""Op families. Importing this package registers every op; see ``base`` for what an op is.

User ops use the same public API (``OpDef``, ``Field``, ``Cost``, ``register`` ...) from
their own module, loaded by an entry point or ``rtsegc --ops``; see ``plugins`` and
docs/extending.md.
"""

# Imported for registration.
from . import conv, linear, merge, norm_act, pad, pool, resample, shuffle, unpool  # noqa: F401
from .base import (REGISTRY, REQUIRED, Cost, Field, FunctionCall, OpDef, OpError, conv_out, get_op,
                   list_ops, op_origin, register, registry_generation, unregister)

__all__ = ["REGISTRY", "REQUIRED", "Cost", "Field", "FunctionCall", "OpDef", "OpError", "conv_out", "get_op",
           "list_ops", "op_origin", "register", "registry_generation", "unregister"]
