"""Memory pass: let activations (and adds) overwrite a map that nothing else reads.

Why: every fresh activation map of 16 MB or more is its own ``mmap`` under glibc's default
allocator, handed back to the OS when freed and page-faulted in again on the next forward. The
compiled SkipNet-MobileNet at 512x1024 allocates 27 such ReLU outputs per forward; the hand-written
reference, with ``nn.ReLU(inplace=True)`` as most PyTorch code has it, allocates none
(benchmarks/README.md has the measured page faults and times).

The rule, checked on the IR without torch: a node whose op can run in place
(:meth:`~rtseg_compiler.ops.base.OpDef.can_run_in_place`: relu, relu6, add, and any op declaring a
bool ``inplace`` field) gets ``inplace: true`` when the buffer its first input lives in is

* read by nothing else: the input has exactly one consumer, and so does every map it is a view
  of (``views_inputs``: a crop is a slice of its input, an identity is its input);
* not the image, not the network's output, not a tap (a map a caller may hold on to);
* not needed by a backward pass: no op on that chain reads its own output in backward
  (``saves_output``: ReLU does; conv, batch norm, add, crop do not). This keeps training
  correct: ReLU in place after a conv or a batch norm is what torchvision's models do, while
  ReLU in place after a ReLU would make autograd raise "modified by an inplace operation".

A node made in place returns its input, so later decisions see it as a view of that input.
Costs and shapes do not change; ``passes.count`` gives the same audit.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from ..ir import INPUT, Graph, Resolved, frozen_map
from ..ops import REGISTRY

__all__ = ["run_in_place", "value_consumers"]


def value_consumers(graph: Graph) -> Counter:
    """How many times each node's value is read (a max-pool's indices, read by unpool, are not its value)."""
    reads: Counter = Counter()
    for node in graph.nodes:
        extra = REGISTRY[node.op].extra_inputs
        for pos, src in enumerate(node.inputs):
            if pos not in extra:
                reads[src] += 1
    reads[graph.output] += 1  # the caller reads the output
    return reads


def run_in_place(resolved: Resolved) -> tuple[Resolved, tuple[str, ...]]:
    """``resolved`` with ``inplace: true`` on every node that may safely overwrite its input.

    Returns the rewritten graph and the names of the nodes switched to in place (nodes a spec
    already marks ``inplace: true`` are kept as written and not listed).
    """
    graph = resolved.graph
    reads = value_consumers(graph)
    protected = {INPUT, graph.output} | {t.node for t in graph.taps}
    in_place: set[str] = set()
    switched: list[str] = []
    nodes = []
    for node in graph.nodes:
        op = REGISTRY[node.op]
        if node.attrs.get("inplace") is True:
            in_place.add(node.name)  # written so in the spec: its output is its input's buffer
        elif op.can_run_in_place(node.attrs) and node.inputs and _free(
                node.inputs[0], graph, reads, protected, in_place):
            node = node.replace(attrs=frozen_map({**node.attrs, "inplace": True}))
            in_place.add(node.name)
            switched.append(node.name)
        nodes.append(node)
    return Resolved(graph.replace(nodes=tuple(nodes)), resolved.input, resolved.types), tuple(switched)


def _free(name: str, graph: Graph, reads: Mapping[str, int], protected: set[str],
          in_place: set[str]) -> bool:
    """Whether the buffer holding ``name``'s value may be overwritten by its single consumer."""
    stack = [name]
    while stack:
        current = stack.pop()
        if current in protected or reads[current] != 1:
            return False
        node = graph.node(current)
        op = REGISTRY[node.op]
        if op.saves_output:
            return False
        shares = set(op.views_inputs) | ({0} if current in in_place else set())
        stack.extend(node.inputs[pos] for pos in sorted(shares) if pos < len(node.inputs))
    return True
