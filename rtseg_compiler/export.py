"""Export a compiled network as an ONNX file or a ``torch.export`` ExportedProgram.

Both go through ``torch.export``: the ExportedProgram is saved with ``torch.export.save``
(``.pt2``), the ONNX file is written by ``torch.onnx.export(..., dynamo=True)``, which needs
the optional ``onnx`` and ``onnxscript`` packages (``pip install -e ".[export]"``).

Outputs carry the spec's names in both formats (:func:`output_names`): a meta's ``outputs:`` keys
(BiSeNet: ``out``, ``aux16``, ``aux32``), or ``out`` for a network with one output.

``dynamic=True`` keeps batch, height and width symbolic where the graph allows it, as decided
on the IR by ``passes/dynamic.py``: a dimension fixed by a layer is exported at its example
size and the layer is named in :attr:`ExportResult.notes`. Two things make crops exportable:

* The compiled module crops with a slice (``x[:, :, :h, :w]``), which is a free view in eager
  mode; but a slice clamps its end to the map, so torch.export must decide ``h <= rows`` for
  every size, and its symbolic reasoning cannot prove SkipNet's ``1 + (H-1)//16 <= 2 + 2·((H-1)//32)``
  (true for every H). Before a dynamic export the crops are rewritten to ``index_select``
  with ``arange(h)``, whose output has exactly ``h`` rows and needs no such proof.
* If torch.export still cannot prove a size relation, its error lists the guards it could
  not discharge; :class:`ExportError` carries them with the layer each one came from,
  found through the fx node's ``meta["layer"]``.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx

from .ops.resample import crop_like
from .passes.dynamic import DimRange, dynamic_ranges

__all__ = ["ExportError", "ExportResult", "FORMATS", "export_compiled", "exportable_crop", "output_names"]

FORMATS = ("onnx", "exported-program")

#: The start of the FutureWarning torch 2.13's ONNX exporter triggers inside torch (see export_compiled).
_TORCH_LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class ExportError(RuntimeError):
    """The network could not be exported as asked; the message says why and where."""


@dataclass
class ExportResult:
    path: Path
    format: str
    example: tuple[int, int, int, int]
    ranges: tuple[DimRange, ...] = ()
    dynamic_batch: bool = False
    notes: list[str] = field(default_factory=list)


def exportable_crop(x: Any, ref: Any, center: bool = False) -> Any:
    """:func:`~rtseg_compiler.ops.resample.crop_like` with an output of exactly ``ref``'s size.

    ``index_select`` with ``arange`` instead of a clamping slice (see the module docstring).
    """
    h, w = ref.shape[-2], ref.shape[-1]
    top = (x.shape[-2] - h) // 2 if center else 0
    left = (x.shape[-1] - w) // 2 if center else 0
    rows = torch.arange(h, device=x.device) + top
    cols = torch.arange(w, device=x.device) + left
    return x.index_select(2, rows).index_select(3, cols)


def _with_exportable_crops(module: fx.GraphModule) -> fx.GraphModule:
    copied = copy.deepcopy(module)
    for node in copied.graph.nodes:
        if node.op == "call_function" and node.target is crop_like:
            node.target = exportable_crop
    copied.recompile()
    return copied


def _dims(ranges: tuple[DimRange, ...], batch: bool) -> tuple[dict[int, Any], list[str]]:
    from torch.export import Dim

    dims: dict[int, Any] = {}
    notes = []
    if batch:
        dims[0] = Dim("batch", min=1, max=1024)
    for axis, r in zip((2, 3), ranges):
        if not r.dynamic:
            where = "; ".join(f"layer '{layer}': {why}" for layer, why in r.blockers) or "no layer named"
            notes.append(f"{r.dim} is fixed at {r.example}: {where}")
            continue
        if r.multiple == 1:
            dims[axis] = Dim(r.dim, min=r.minimum, max=r.maximum)
        else:
            k = Dim(f"{r.dim}_steps", min=(r.minimum - r.remainder) // r.multiple,
                    max=(r.maximum - r.remainder) // r.multiple)
            dims[axis] = r.multiple * k + r.remainder if r.remainder else r.multiple * k
            where = "; ".join(f"layer '{layer}': {why}" for layer, why in r.blockers)
            notes.append(f"{r.dim} is dynamic only in steps of {r.multiple} "
                         f"({r.remainder} mod {r.multiple}){': ' + where if where else ''}")
    return dims, notes


_GUARD = re.compile(r"^\s*- (.*)$", re.M)


def _explain(exc: Exception, module: fx.GraphModule) -> str:
    """torch.export's constraint error, with the layers its guards came from where it says."""
    text = str(exc)
    guards = _GUARD.findall(text) or [text.splitlines()[0] if text else type(exc).__name__]
    names = {n.name: n.meta.get("layer") for n in module.graph.nodes if n.meta.get("layer")}
    layers = [layer for name, layer in names.items() if re.search(rf"\b{re.escape(name)}\b", text)]
    where = f" (at layer {', '.join(repr(x) for x in dict.fromkeys(layers))})" if layers else ""
    return "torch.export could not keep the size symbolic" + where + ":\n  " + "\n  ".join(guards[:6])


def output_names(graph: Any) -> tuple[str, ...]:
    """The names the exported outputs carry: the meta's ``outputs:`` keys (``out``, ``aux16`` ...), or
    ``out`` for a network with one output (torchvision's name for a segmentation model's main output)."""
    return tuple(name for name, _ in graph.outputs) or ("out",)


def _name_outputs(program: Any, names: tuple[str, ...]) -> None:
    """Rename the nodes an ExportedProgram returns to ``names`` (torch.export names them after their
    aten op: ``upsample_bilinear2d_1``), in its graph and its signature alike."""
    specs = program.graph_signature.output_specs
    if len(specs) != len(names):
        return
    nodes = {n.name: n for n in program.graph.nodes}
    targets = [nodes.get(getattr(spec.arg, "name", None)) for spec in specs]
    if any(t is None or t.op != "call_function" for t in targets) or len(set(targets)) != len(targets):
        return  # an output that is an input or another output: keep torch's names
    taken = set(nodes)
    for spec, node, name in zip(specs, targets, names):
        other = nodes.get(name)
        if other is not None and other is not node:  # free the name for the output
            fresh = next(f"{name}_{i}" for i in range(1, len(taken) + 2) if f"{name}_{i}" not in taken)
            other.name, nodes[fresh] = fresh, other
            taken.add(fresh)
        node.name = name
        nodes[name] = node
        taken.add(name)
        spec.arg.name = name
    program.graph_module.recompile()


def export_compiled(compiled: Any, path: str | Path, fmt: str, *, dynamic: bool = False,
                    batch: int = 1) -> ExportResult:
    """Write ``compiled.module`` (a :class:`~rtseg_compiler.CompiledModel`) to ``path``.

    The example input is the audit's size (``batch`` images). With ``dynamic``, see the module
    docstring. Raises :class:`ExportError` with a readable reason.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: no such directory {path.parent}")
    module = compiled.module.eval()
    _, c, h, w = compiled.audit.input
    # torch specialises a dimension whose example value is 1, so a dynamic batch needs 2 images.
    batch = max(batch, 2) if dynamic else batch
    parameter = next(module.parameters(), None)
    example = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))
    if parameter is not None:
        example = example.to(device=parameter.device, dtype=parameter.dtype)
    result = ExportResult(path, fmt, (batch, c, h, w))
    dynamic_shapes = None
    if dynamic:
        resolved = (compiled.inference.resolved if compiled.inference is not None
                    else compiled.analysis.resolved)
        result.ranges = dynamic_ranges(resolved)
        dims, result.notes = _dims(result.ranges, batch=True)
        result.dynamic_batch = True
        dynamic_shapes = (dims,)
        module = _with_exportable_crops(module)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # torch raises several types (UserError, ConstraintViolationError ...)
        raise ExportError(_explain(exc, module)) from exc
    names = output_names(compiled.graph)
    _name_outputs(program, names)
    if fmt == "exported-program":
        try:
            torch.export.save(program, str(path))
        except OSError as exc:
            raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
        return result
    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter imports it lazily)
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the optional packages onnx and onnxscript ({exc}); "
                          "install them with: pip install -e \".[export]\"") from None
    try:
        with warnings.catch_warnings():
            # torch's ONNX decomposition deep-copies pytree specs, whose LeafSpec constructor warns
            # that LeafSpec is deprecated (torch 2.13): torch's own use, nothing the user can act on.
            # Only that message is ignored; every other warning still reaches the user.
            warnings.filterwarnings("ignore", message=_TORCH_LEAFSPEC_WARNING, category=FutureWarning)
            torch.onnx.export(program, (example,), str(path), dynamo=True, output_names=list(names),
                              dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return result
