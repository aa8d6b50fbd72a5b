"""Shape rules, costs and errors of ``maxpool indices``, ``unpool`` and ``pad`` (ENet, SegNet). No torch.

Inputs are the 32-channel probe encoder of conftest (24x40 unless a case needs an odd size).
Unpooling's default output size is PyTorch's ``(in - 1)·s - 2p + k``; with a reference map,
torch accepts sizes strictly within one stride of it (``F._unpool_output_size``), which is
what makes SegNet's ceil-mode 45 -> 23 -> 45 round trip legal. The torch tests run the same
graphs for real.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import encoder_yaml
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ops.base import conv_out
from rtseg_compiler.pipeline import analyze


def shape_of(analysis, name: str) -> tuple[int, int, int]:
    t = analysis.resolved.types[f"encoder.{name}"]
    return (t.channels, t.height, t.width)


def errors(encoder_spec, layers: str, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as info:
        analyze(encoder_spec(layers, **kwargs))
    return [d.message for d in info.value.diagnostics]


def test_unpool_restores_a_ceil_mode_pool(encoder_spec):
    """45x81 pooled with ceil_mode is 23x41; unpooling to the pooled map's size gives 45x81 back."""
    a = analyze(encoder_spec("""
        - {name: pool, op: maxpool, kernel: 2, ceil_mode: true, indices: true}
        - {name: up, op: unpool, kernel: 2, inputs: [pool, pool, input]}
    """, input_size=(45, 81)))
    assert shape_of(a, "pool") == (32, 23, 41)
    assert shape_of(a, "up") == (32, 45, 81)
    assert a.resolved.types["encoder.up"].stride == 1
    layer = a.audit.layers[-1]
    assert (layer.params, layer.macs, layer.tf_flops) == (0, 0, 0)


def test_unpool_default_size_without_reference(encoder_spec):
    a = analyze(encoder_spec("""
        - {name: pool, op: maxpool, kernel: 3, stride: 2, padding: 1, indices: true}
        - {name: up, op: unpool, kernel: 3, stride: 2, padding: 1, inputs: [pool, pool]}
    """))
    # 24 -> floor((24 + 2 - 3)/2) + 1 = 12 -> (12 - 1)·2 - 2 + 3 = 23; 40 -> 20 -> 39.
    assert shape_of(a, "pool") == (32, 12, 20)
    assert shape_of(a, "up") == (32, 23, 39)


def test_maxpool_indices_cost_is_unchanged(encoder_spec):
    """Returning indices changes neither shape nor any count (TF: k² per output element)."""
    plain = analyze(encoder_spec("- {op: maxpool, kernel: 2}")).audit.layers[-1]
    with_idx = analyze(encoder_spec("- {op: maxpool, kernel: 2, indices: true}")).audit.layers[-1]
    assert plain.output_shape == with_idx.output_shape == (32, 12, 20)
    assert (plain.macs, plain.tf_flops) == (with_idx.macs, with_idx.tf_flops) == (0, 4 * 32 * 12 * 20)


def test_unpool_needs_a_pool_with_indices(encoder_spec):
    msgs = errors(encoder_spec, """
        - {name: pool, op: maxpool, kernel: 2}
        - {name: up, op: unpool, kernel: 2, inputs: [pool, pool, input]}
    """)
    assert len(msgs) == 1
    assert "'pool' must be a layer that also returns indices" in msgs[0] and "'up'" in msgs[0]


def test_unpool_values_must_match_indices(encoder_spec):
    msgs = errors(encoder_spec, """
        - {name: pool, op: maxpool, kernel: 2, indices: true}
        - {name: proj, op: conv, out: 16, kernel: 1}
        - {name: up, op: unpool, kernel: 2, inputs: [proj, pool, input]}
    """)
    assert "16x12x20" in msgs[0] and "32x12x20" in msgs[0] and "same shape" in msgs[0]


def test_unpool_reference_out_of_range(encoder_spec):
    """Unpooling 12x20 (k2 s2) can reach 23..25 rows and 39..41 columns, not 48x80."""
    msgs = errors(encoder_spec, """
        - {name: pool, op: maxpool, kernel: 2, indices: true}
        - {name: big, op: deconv, input: input, out: 32, kernel: 2, stride: 2}
        - {name: up, op: unpool, kernel: 2, inputs: [pool, pool, big]}
    """)
    assert any("cannot unpool 12x20 to 48x80" in m for m in msgs)


def test_unpool_arity(encoder_spec):
    msgs = errors(encoder_spec, """
        - {name: pool, op: maxpool, kernel: 2, indices: true}
        - {name: up, op: unpool, kernel: 2, inputs: [pool]}
    """)
    assert "takes 2 to 3 inputs, got 1" in msgs[0]


@settings(max_examples=30, deadline=None)
@given(h=st.integers(2, 50), w=st.integers(2, 50), k=st.integers(1, 4), s=st.integers(1, 4),
       ceil=st.booleans())
def test_unpool_undoes_any_pool_it_accepts(tmp_path_factory, h: int, w: int, k: int, s: int,
                                           ceil: bool):
    """Unpooling a pool's output to the pooled map's size is accepted exactly when torch accepts it.

    torch takes an output size strictly within one stride of (n - 1)·s + k; that fails only for
    pools whose stride exceeds their kernel by enough to skip trailing pixels.
    """
    if k > min(h, w):
        return
    path = tmp_path_factory.mktemp("unpool") / "enc.yaml"
    path.write_text(encoder_yaml(f"""
        - {{name: pool, op: maxpool, kernel: {k}, stride: {s}, ceil_mode: {str(ceil).lower()},
            indices: true}}
        - {{name: up, op: unpool, kernel: {k}, stride: {s}, inputs: [pool, pool, input]}}
    """, input_size=(h, w)))
    defaults = [(conv_out(n, k, s, 0, 1, ceil) - 1) * s + k for n in (h, w)]
    legal = all(d - s < n < d + s for n, d in zip((h, w), defaults))
    if legal:
        assert shape_of(analyze(path), "up") == (32, h, w)
    else:
        with pytest.raises(SpecError, match="cannot unpool"):
            analyze(path)


def test_pad_channels_and_borders(encoder_spec):
    a = analyze(encoder_spec("""
        - {name: wide, op: pad, out: 64}
        - {name: framed, op: pad, top: 1, bottom: 2, left: 0, right: 3}
    """))
    assert shape_of(a, "wide") == (64, 24, 40)
    assert shape_of(a, "framed") == (64, 27, 43)
    assert all((r.params, r.macs, r.tf_flops) == (0, 0, 0) for r in a.audit.layers)


def test_pad_cannot_drop_channels(encoder_spec):
    msgs = errors(encoder_spec, "- {name: narrow, op: pad, out: 16}")
    assert "out=16 is below the input's 32" in msgs[0]
