"""Regressions for problems a code review found outside the expansion pass."""

from __future__ import annotations

import itertools

import pytest

from conftest import SPECS
from rtseg_compiler.cli import main
from rtseg_compiler.diagnostics import SpecError
from rtseg_compiler.ops.base import conv_out
from rtseg_compiler.pipeline import analyze

MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"


@pytest.mark.parametrize("size,kernel,stride,expected", [(1, 2, 2, 1), (2, 3, 3, 1), (1, 3, 2, 0), (1, 5, 4, 0)])
def test_ceil_mode_pool_wider_than_its_input(size, kernel, stride, expected):
    """ATen's (span + s - 1) div_rtn s + 1: a 2/2 ceil pool of a 1x1 map gives 1x1, a 3/2 one
    gives 0x0 (values from torch.nn.functional.max_pool2d, torch 2.13)."""
    assert conv_out(size, kernel, stride, 0, 1, ceil_mode=True) == expected
    assert conv_out(size, kernel, stride, 0, 1, ceil_mode=False) == 0


def test_ceil_mode_matches_the_closed_form_on_a_grid():
    for size, k, s in itertools.product(range(1, 12), range(1, 6), range(1, 4)):
        p = 0
        span = size + 2 * p - (k - 1) - 1
        expected = (span + s - 1) // s + 1
        if (expected - 1) * s >= size + p:
            expected -= 1
        assert conv_out(size, k, s, p, 1, True) == max(expected, 0)


def test_output_stride_refuses_a_strided_conv_without_same_padding(tmp_path):
    """A k2/s2/p0 conv at stride 1 would shrink its map (8 -> 7): refused, like such pools."""
    encoder = tmp_path / "enc.yaml"
    encoder.write_text(
        "kind: encoder\nname: e\nlayers:\n"
        + "".join(f"  - {{name: c{i}, op: conv, kernel: 2, stride: 2, padding: 0, out: 8}}\n"
                  for i in range(1, 6))
        + "taps: {stride32: c5}\n")
    meta = tmp_path / "meta.yaml"
    meta.write_text("kind: meta\nname: m\nrequires: [stride32]\n"
                    "layers:\n  - {name: s, op: conv, input: encoder.stride32, out: 2, kernel: 1}\n")
    with pytest.raises(SpecError) as err:
        analyze(encoder=encoder, meta=meta, input_size=(64, 64), output_stride=8)
    messages = [d.message for d in err.value.errors]
    assert any("cannot remove the stride of conv 'encoder.c4'" in m for m in messages), messages


def test_visualize_unknown_format_and_unwritable_path_are_usage_errors(tmp_path, capsys):
    assert main(["visualize", str(MODEL), "-o", str(tmp_path / "x.txt")]) == 2
    assert "cannot draw to '.txt'" in capsys.readouterr().err
    assert main(["visualize", str(MODEL), "-o", str(tmp_path / "missing" / "x.dot")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_model_and_encoder_meta_pair_together_are_refused(capsys):
    assert main(["flops", str(MODEL), "--meta", "nope.yaml"]) == 2
    assert "not both" in capsys.readouterr().err


def test_output_stride_conflict_with_the_meta_is_an_error():
    with pytest.raises(SpecError, match="conflicts with the meta-architecture"):
        analyze(SPECS / "models" / "dilation_mobilenet_v1.yaml", (64, 64), output_stride=16)
