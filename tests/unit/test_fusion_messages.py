"""Errors at a fusion of misaligned maps point the right way and name layers as the spec wrote them."""

from __future__ import annotations

import pytest

from conftest import SPECS
from rtseg_compiler import SpecError, analyze

META = """
kind: meta
name: fpn
requires: [stride16, stride32]
blocks:
  lateral:
    params: {out: ~}
    layers:
      - {name: conv, op: conv, out: out, kernel: 1}
      - {op: relu}
layers:
  - {name: lat32, block: lateral, out: 64, inputs: [encoder.stride32]}
  - {name: lat16, block: lateral, out: 64, inputs: [encoder.stride16]}
  %s
  - {name: score, op: conv, out: num_classes, kernel: 1}
  - {name: up, op: upsample, scale: 16}
"""


def _error(write_spec, fuse: str) -> str:
    meta = write_spec("meta.yaml", META % fuse)
    with pytest.raises(SpecError) as caught:
        analyze(encoder=SPECS / "encoders" / "resnet18.yaml", meta=meta, input_size=(256, 256))
    return str(caught.value)


def test_adding_maps_of_two_strides_suggests_an_upsample_not_a_crop(write_spec) -> None:
    text = _error(write_spec, "- {name: fuse, op: add, inputs: [lat16, lat32]}")
    assert "'lat16' (stride 16) is 16x16 and 'lat32' (stride 32) is 8x8" in text
    assert "upsample 'lat32' by 2 to the stride of 'lat16'" in text
    assert "align them with a 'crop'" not in text and "input sizes that work" not in text


def test_a_block_use_is_named_as_written_not_by_its_last_layer(write_spec) -> None:
    text = _error(write_spec, "- {name: fuse, op: concat, inputs: [lat32, lat16]}")
    assert "'lat32'" in text and "conv_relu" not in text


def test_same_stride_maps_of_different_sizes_still_suggest_a_crop(write_spec) -> None:
    fuse = """- {name: up32, op: deconv, out: 64, kernel: 4, stride: 2, padding: 0, inputs: [lat32]}
  - {name: fuse, op: add, inputs: [up32, lat16]}"""
    text = _error(write_spec, fuse)
    assert "'up32' is 18x18 and 'lat16' is 16x16" in text and "crop" in text
