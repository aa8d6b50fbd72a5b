"""Row and column maps in the compiled module: an axial-attention block (SeaFormer's squeeze
axial attention, reduced to its shapes) has torch's shapes at every layer, at its natural stride
and with its encoder rewritten to output stride 16, and FlopCounterMode on the meta device
counts 2 x the audit's MACs (attention along rows and columns included).

tests/unit/test_axial_strides.py checks the strides of the same kind of block in pure Python.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from rtseg_compiler import compile_model  # noqa: E402
from test_emit import layer_shapes  # noqa: E402

SPEC = """\
kind: encoder
name: axial_probe
input: [128, 192]
blocks:
  axial:
    params: {dim: ~, heads: 2}
    layers:
      - {name: q, op: conv, out: dim, kernel: 1, input: input}
      - {name: k, op: conv, out: dim, kernel: 1, input: input}
      - {name: v, op: conv, out: dim, kernel: 1, input: input}
      - {name: q_row, op: reduce, mode: mean, over: width, input: q}
      - {name: pos_row, op: param, channels: dim, height: 16, width: 1, input: q_row}
      - {name: pos_row_up, op: upsample, mode: bilinear, inputs: [pos_row, q_row]}
      - {name: q_row_pos, op: add, inputs: [q_row, pos_row_up]}
      - {name: k_row, op: reduce, mode: mean, over: width, input: k}
      - {name: v_row, op: reduce, mode: mean, over: width, input: v}
      - {name: row, op: attention, inputs: [q_row_pos, k_row, v_row], heads: heads}
      - {name: row_proj, op: conv, out: dim, kernel: [3, 1], padding: [1, 0]}
      - {name: q_col, op: reduce, mode: mean, over: height, input: q}
      - {name: k_col, op: reduce, mode: mean, over: height, input: k}
      - {name: v_col, op: reduce, mode: mean, over: height, input: v}
      - {name: col, op: attention, inputs: [q_col, k_col, v_col], heads: heads}
      - {name: col_proj, op: conv, out: dim, kernel: [1, 3], padding: [0, 1]}
      - {name: axial, op: add, inputs: [row_proj, col_proj]}
      - {name: mixed, op: add, inputs: [v, axial]}
      - {name: detail, op: conv, out: dim, kernel: 3, input: input}
      - {name: gate, op: sigmoid, input: mixed}
      - {name: out, op: mul, inputs: [gate, detail]}
layers:
  - {name: c1, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c2, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c3, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c4, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: c5, op: conv, out: 16, kernel: 3, stride: 2}
  - {name: sea, block: axial, dim: 16}
taps: {stride32: sea.out}
"""


@pytest.mark.parametrize("output_stride", [None, 16])
def test_axial_block_layers_have_the_inferred_shapes_and_counted_flops(tmp_path: Path, output_stride):
    path = tmp_path / "axial.yaml"
    path.write_text(SPEC)
    with torch.device("meta"):
        compiled = compile_model(path, (128, 192), output_stride=output_stride)
    x = torch.empty(1, 3, 128, 192, device="meta")
    types = compiled.analysis.resolved.types
    got = layer_shapes(compiled, x)
    wrong = {name: (shape, str(types[name])) for name, shape in got.items()
             if shape != (1, types[name].channels, types[name].height, types[name].width)}
    assert not wrong, f"torch shape vs inferred type: {wrong}"
    rows = types["encoder.sea.row"]
    assert rows.strides == ((32, 192) if output_stride is None else (16, 192))
    with FlopCounterMode(display=False) as counter:
        compiled.module(x)
    assert counter.get_total_flops() == 2 * compiled.audit.macs
