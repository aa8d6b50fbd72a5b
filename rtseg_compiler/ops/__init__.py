"""Op families. Importing this package registers every op; see ``base`` for what an op is.

A user op package imports what it needs from here: ``OpDef``, ``Field`` and its kinds
(``INT``, ``PAIR``, ``NUMBER``, ``BOOL``, ``CHOICE``), ``Cost``, ``register`` ... and, for its
behaviour in a dilated encoder, ``AtRate``, ``Replace``, ``unaffected``, ``size_independent``,
``not_dilatable`` or the conv and pool rules ``dilate_conv``/``dilate_pool``. Such a module is loaded by an installed entry point or
``rtsegc --ops``; see ``plugins`` and docs/extending.md.
"""

# Imported for registration.
from . import (  # noqa: F401
    activation, attention, conv, linear, merge, norm_act, pad, param, pool, reduce, resample, scalar,
    shuffle, split, unpool)
from .base import (BOOL, CHOICE, INT, NUMBER, PAIR, REGISTRY, REQUIRED, AtRate, Cost, DilateHook, Field,
                   FieldKind, FunctionCall, OpDef, OpError, Replace, conv_out, get_op, list_ops,
                   not_dilatable, op_origin, register, registry_generation, sampled, size_independent,
                   unaffected, unregister)
from .conv import dilate_conv
from .pool import dilate_pool

__all__ = ["BOOL", "CHOICE", "INT", "NUMBER", "PAIR", "REGISTRY", "REQUIRED", "AtRate", "Cost", "DilateHook",
           "Field", "FieldKind", "FunctionCall", "OpDef",
           "OpError", "Replace", "conv_out", "dilate_conv", "dilate_pool", "get_op", "list_ops",
           "not_dilatable", "op_origin", "register", "registry_generation", "sampled", "size_independent",
           "unaffected", "unregister"]
