"""The op registry: what an op is, and the helpers op families share.

An op is declared once, in one file under ``ops/``, by an :class:`OpDef` that
holds everything the compiler needs to know about it:

* ``fields``: its attributes with types and defaults, from which the JSON
  Schema fragment is generated (so schema and semantics cannot drift);
* ``complete``: derived defaults and cross-field checks, e.g. conv padding
  ``d*(k-1)//2`` and "groups divides in_channels";
* ``infer``: the output :class:`~rtseg_compiler.ir.TensorType`, following
  PyTorch's arithmetic exactly;
* ``count``: parameters, MACs and TF-profiler FLOPs, analytically;
* ``build``: the torch module (or function) that computes it. Only this hook
  imports torch, and only when called;
* ``dilate``: what the op becomes when the encoder is run at a smaller output
  stride (``passes/dilate.py``): given its resolved attrs and an
  :class:`AtRate`, it returns new attrs, a :class:`Replace`, or raises
  :class:`OpError`. Ready-made declarations: :func:`unaffected` (pointwise
  ops), :func:`size_independent` (global and adaptive pooling, linear),
  :func:`not_dilatable` (ops that cannot run on a dilated map, such as
  upsampling by a scale); conv and pool declare their own rules.
  An op without one (``dilate=None``, the default) is fine wherever its output
  stride equals its input stride; a *strided* op without one is an error at
  its line, once the rewrite reaches it.

* traits read by the build passes, so that no pass matches op names:
  ``inplace_safe``, ``views_inputs`` and ``saves_output`` (``passes/inplace.py``),
  ``norm_folds_into`` and ``folds_into_previous`` (batch-norm folding,
  ``passes/fold_bn.py``), ``inference_identity`` (dropout, removed at inference), and
  ``source_expression`` (how ``rtsegc compile --save-code`` writes a call inline).

Adding an op is one ``register(OpDef(...))`` call in one file.

This module is the import surface user op packages and docs/extending.md use; the
definitions live in four modules along the seams of the op model: :mod:`.kinds`
(attribute kinds, ``Field``, ``OpError``), :mod:`.registry` (``OpDef``, ``Cost``,
``FunctionCall``, ``register`` and the registry), :mod:`.dilation` (the output-stride
rewrite's ``AtRate``/``Replace`` and ready-made hooks) and :mod:`.shape_rules` (PyTorch's
conv/pool size arithmetic and the checks fusion and pooling ops share).
"""

from __future__ import annotations

# Beyond __all__, BUILTIN, DILATION_ROWS, FIELD_KINDS, MAX_FIELD_INT, REQUIRED, complete_window and
# registering_from are importable from here too: the op files and the CLI use them.
from .dilation import (DILATION_ROWS, AtRate, DilateHook, Replace, described, not_dilatable, size_independent,
                       unaffected)
from .kinds import (BOOL, CHOICE, FIELD_KINDS, INT, MAX_FIELD_INT, NUMBER, PAIR, REQUIRED, BoolKind,
                    ChoiceKind, Field, FieldKind, IntKind, NumberKind, OpError, PairKind)
from .registry import (BUILTIN, REGISTRY, Cost, FunctionCall, OpDef, get_op, list_ops, op_origin, register,
                       registering_from, registry_generation, unregister)
from .shape_rules import complete_window, conv_out, same_spatial, sampled

__all__ = [
    "Field",
    "FieldKind",
    "IntKind",
    "PairKind",
    "NumberKind",
    "BoolKind",
    "ChoiceKind",
    "INT",
    "PAIR",
    "NUMBER",
    "BOOL",
    "CHOICE",
    "OpDef",
    "OpError",
    "Cost",
    "FunctionCall",
    "register",
    "unregister",
    "get_op",
    "list_ops",
    "op_origin",
    "registry_generation",
    "REGISTRY",
    "AtRate",
    "Replace",
    "DilateHook",
    "unaffected",
    "size_independent",
    "not_dilatable",
    "described",
    "conv_out",
    "same_spatial",
    "sampled",
]
