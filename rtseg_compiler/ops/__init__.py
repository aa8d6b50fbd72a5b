"""Op families. Importing this package registers every op; see ``base`` for what an op is."""

from . import conv, linear, merge, norm_act, pool, resample, shuffle  # noqa: F401  (registration)
from .base import REGISTRY, Cost, Field, FunctionCall, OpDef, OpError, get_op, list_ops, register

__all__ = ["REGISTRY", "Cost", "Field", "FunctionCall", "OpDef", "OpError", "get_op", "list_ops",
           "register"]
