"""Pieces that training, evaluation and benchmarking share: model arguments, datasets, devices.

A checkpoint stores :class:`ModelArgs` as a plain dict, so ``rtsegc eval --checkpoint`` can
rebuild the exact network from the spec files without the training command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .data import CAMVID_CLASSES, ClassSet, SyntheticSegmentation, class_set

__all__ = ["ModelArgs", "build_model", "make_dataset", "pick_device", "SYNTHETIC"]

#: ``--data synthetic`` selects the generated dataset instead of a folder.
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class ModelArgs:
    """Everything :func:`rtseg_compiler.compile_model` needs; spec paths are stored as given.

    ``encoder_params``/``meta_params`` are the command line's ``--encoder-param``/``--meta-param``
    overrides (``{"width": 0.5}``): a checkpoint records them, so evaluation, prediction and
    ``--resume`` rebuild the network that was trained, not the spec file's default.
    """

    model: str | None
    encoder: str | None
    meta: str | None
    input_size: tuple[int, int] | None
    num_classes: int
    output_stride: int | None = None
    encoder_params: Mapping[str, Any] | None = None
    meta_params: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for key in ("encoder_params", "meta_params"):  # {} and None build the same network: one spelling
            object.__setattr__(self, key, dict(getattr(self, key)) if getattr(self, key) else None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size) if self.input_size else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelArgs":
        """The inverse of :meth:`to_dict`; checkpoints written before spec parameters were recorded
        have no ``encoder_params``/``meta_params`` keys and read as None."""
        size = data.get("input_size")
        return cls(model=data.get("model"), encoder=data.get("encoder"), meta=data.get("meta"),
                   input_size=tuple(size) if size else None, num_classes=int(data["num_classes"]),
                   output_stride=data.get("output_stride"),
                   encoder_params=data.get("encoder_params"), meta_params=data.get("meta_params"))


def build_model(args: ModelArgs, documents: Mapping[str, str] | None = None):
    """Compile the spec; returns the CompiledModel (``.module`` is the network, ``.audit`` its counts).

    The module is in eval mode, as :func:`rtseg_compiler.compile_model` builds it; training calls
    ``.train()``. ``args.model``/``encoder``/``meta`` may be ``SpecSource`` texts, and ``documents``
    (name -> text) stands for files by name: a checkpoint rebuilds its network so, with no files.
    """
    from rtseg_compiler import compile_model
    from rtseg_compiler.cli.args import model_choice_problem

    problem = model_choice_problem(args.model, args.encoder, args.meta)
    if problem:
        raise ValueError(problem)
    compiled = compile_model(args.model, args.input_size, args.num_classes, encoder=args.encoder,
                             meta=args.meta, output_stride=args.output_stride,
                             encoder_params=args.encoder_params, meta_params=args.meta_params,
                             documents=documents)
    check_user_ops(compiled)
    return compiled


def check_class_outputs(compiled, num_classes: int) -> None:
    """A located SpecError unless every output the loss reads has one channel per class.

    A spec can validate with an output of other channels: a meta whose layers a ``when:`` all
    removed, or an ``output:``/``outputs:`` entry naming an encoder tap, return the encoder's map
    (or the image). The compiler cannot refuse those, since it does not know what the outputs are for; training can,
    and the cross-entropy loss would otherwise fail deep inside torch with a message about weights.
    """
    from rtseg_compiler.diagnostics import Diagnostic, Location, SpecError

    graph, audit = compiled.graph, compiled.audit
    outputs = [(h.name, h.node, h.output_shape) for h in audit.heads
               if h.role in ("main", "auxiliary") and h.output_shape is not None]
    if not outputs:
        outputs = [("output", graph.output, audit.output_shape)]
    problems = []
    for name, node, shape in outputs:
        if shape[1] == num_classes:
            continue
        where = (graph.node(node).loc if node in graph
                 else Location(graph.files.get("meta") or graph.files.get("model") or graph.name))
        what = "the image" if node == "input" else f"layer '{node}'"
        origin = tuple(graph.node(node).origin) if node in graph else ()
        chosen_in = graph.files.get("meta") or graph.files.get("model")
        problems.append(Diagnostic(
            f"output '{name}' is {what}, with {shape[1]} channels; training needs one per class ({num_classes})",
            where, hint="end each head with a layer of 'out: num_classes' channels",
            notes=origin + ((f"the outputs are chosen in {chosen_in}",) if chosen_in else ())))
    if problems:
        raise SpecError(problems)


def check_user_ops(compiled) -> None:
    """Run one forward and compare what each user op's module makes with what its shape rule declared.

    Built-in ops are tested against their shape rules in the suite; a user op's ``infer`` and ``build``
    are two hooks its author keeps in step by hand, and a mismatch otherwise surfaces as a shape error
    deep in a later layer, blamed on nothing. The check runs only when the graph holds user ops (one
    forward of batch 2 in eval mode) and raises a RunError naming the op, its spec line and both shapes.
    """
    from rtseg_compiler.ops import op_origin
    from rtseg_compiler.ops.base import BUILTIN

    from .errors import RunError

    user = [n for n in compiled.graph.nodes if op_origin(n.op) != BUILTIN]
    if not user:
        return
    module = compiled.module
    types = compiled.analysis.resolved.types
    seen: dict[str, tuple[int, ...]] = {}
    hooks = []
    for node in user:
        try:
            sub = module.get_submodule(node.name)
        except AttributeError:
            continue  # a stateless op emitted as a function call: nothing to hook
        hooks.append(sub.register_forward_hook(
            lambda mod, inputs, output, name=node.name: seen.setdefault(name, tuple(output.shape))
            if isinstance(output, torch.Tensor) else None))
    _, c, h, w = compiled.audit.input
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            try:
                module(torch.zeros(2, c, h, w))
            except Exception as exc:  # noqa: BLE001 - judged below against the declared shapes
                failure = exc
            else:
                failure = None
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    for node in user:
        declared = types.get(node.name)
        got = seen.get(node.name)
        if declared is None or got is None:
            continue
        want = (2, declared.channels, declared.height, declared.width)
        if got != want:
            shape = f"{declared.channels}x{declared.height}x{declared.width}"
            raise RunError(f"{node.loc.file}:{node.loc.line}: op '{node.op}' ({op_origin(node.op)}) declares "
                           f"{shape} (CxHxW) in its shape rule but its module makes "
                           f"{'x'.join(map(str, got[1:]))} at layer '{node.name}'; make its infer and build "
                           "agree")
    if failure is not None and any(n.name not in seen for n in user):
        raise RunError(f"the network fails its first forward ({type(failure).__name__}: "
                       f"{str(failure).splitlines()[0][:160]}); it holds user ops "
                       f"({', '.join(sorted({f'{n.op} ({op_origin(n.op)})' for n in user}))}) whose module "
                       "never ran to be checked: check that their infer and build agree")
    if failure is not None:
        raise failure


def dataset_spec_for(classes: ClassSet | str | int):
    """The dataset file that ``--classes camvid`` / ``--classes N`` stands for (SegNet layout)."""
    from .datasets import dataset_from_classes, load_dataset_spec

    if isinstance(classes, str) and classes.lower() == "camvid":
        return load_dataset_spec("camvid")
    classes = classes if isinstance(classes, ClassSet) else class_set(classes)
    if classes.names == CAMVID_CLASSES:
        return load_dataset_spec("camvid")
    # label value N marks void, as the synthetic folders and CamVid's Unlabelled (11) store it
    void = [classes.num_classes] if classes.num_classes < 255 else []
    return dataset_from_classes(classes.names, void=void)


def make_dataset(data: str, split: str, size: tuple[int, int], classes: ClassSet | str | int, *,
                 limit: int | None = None, hflip_prob: float = 0.0, label_size: str = "input",
                 synthetic_length: int = 64, seed: int = 0, dataset_spec=None, augment=(),
                 skip_bad: bool = False, instances: bool = False, external_splits: bool = False):
    """A dataset folder described by ``dataset_spec`` (default: the one ``classes`` stands for), or the
    synthetic set when ``data == "synthetic"``.

    Synthetic splits use disjoint seeds (train: ``seed``, val: ``seed + 1``) so validation is unseen data.
    ``augment`` steps (and ``hflip_prob``, the older flag) apply to this split; pass none for evaluation.
    """
    if data == SYNTHETIC:
        # a ClassSet, or the DatasetSpec that evaluation passes (it has num_classes too)
        classes = classes if hasattr(classes, "num_classes") else class_set(classes)
        length = limit if limit is not None else synthetic_length
        return SyntheticSegmentation(length, size, classes.num_classes, seed=seed + (split != "train"))
    from .data import DatasetFolder

    if not Path(data).is_dir():
        from .datasets import DataError

        raise DataError(f"--data {data}: no such dataset folder"
                        + (" (it is a file)" if Path(data).exists() else "") + "; or use --data synthetic")
    spec = dataset_spec if dataset_spec is not None else dataset_spec_for(classes)
    steps = list(augment) + ([{"op": "hflip", "p": hflip_prob}] if hflip_prob > 0 else [])
    return DatasetFolder(spec, data, split, size, label_size=label_size, augment=steps, limit=limit,
                         skip_bad=skip_bad, instances=instances, external_splits=external_splits)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
