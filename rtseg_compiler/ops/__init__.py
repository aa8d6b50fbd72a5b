"""Op families. Importing this package registers every op; see ``base`` for what an op is."""

# Imported for registration.
from . import conv, linear, merge, norm_act, pad, pool, resample, shuffle, unpool  # noqa: F401
from .base import REGISTRY, Cost, Field, FunctionCall, OpDef, OpError, get_op, list_ops, register

__all__ = ["REGISTRY", "Cost", "Field", "FunctionCall", "OpDef", "OpError", "get_op", "list_ops",
           "register"]
