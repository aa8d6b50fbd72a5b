"""Op families. Importing this package registers every op; see ``base`` for what an op is.

A user op package imports what it needs from here: ``OpDef``, ``Field``, ``Cost``,
``register`` ... and, for its behaviour in a dilated encoder, ``AtRate``, ``Replace``,
``unaffected``, ``size_independent``, ``not_dilatable`` or the conv and pool rules ``dilate_conv``/``dilate_pool``.
"""

# Imported for registration.
from . import activation, conv, linear, merge, norm_act, pad, pool, resample, shuffle, split, unpool  # noqa: F401
from .base import (REGISTRY, REQUIRED, AtRate, Cost, DilateHook, Field, FunctionCall, OpDef, OpError,
                   Replace, get_op, list_ops, not_dilatable, register, size_independent,
                   unaffected)
from .conv import dilate_conv
from .pool import dilate_pool

__all__ = ["REGISTRY", "REQUIRED", "AtRate", "Cost", "DilateHook", "Field", "FunctionCall", "OpDef",
           "OpError", "Replace", "dilate_conv", "dilate_pool", "get_op", "list_ops", "not_dilatable",
           "register", "size_independent", "unaffected"]
