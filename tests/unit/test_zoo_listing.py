"""The whole zoo listed by kind (zoo.list_models / zoo_entries; rtsegc models), no torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtseg_compiler import analyze, list_models
from rtseg_compiler.cli.catalogue import render_zoo, zoo_cost
from rtseg_compiler.zoo import KINDS, no_match_message, resolve_spec, zoo_entries

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_every_spec_file_is_listed_under_exactly_one_kind() -> None:
    listed = [e.path.resolve() for kind in KINDS for e in zoo_entries(kind=kind)]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.resolve() for p in SPECS.glob("*/*.yaml")}


@pytest.mark.parametrize("kind, folder", [("encoder", "encoders"), ("meta", "meta"),
                                          ("dataset", "datasets"), ("model", "models")])
def test_every_file_of_a_kinds_folder_is_listed_by_its_bare_name(kind: str, folder: str) -> None:
    names = list_models(kind=kind)
    assert {p.stem for p in (SPECS / folder).glob("*.yaml")} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("kind", KINDS)
def test_every_listed_name_resolves_to_its_file_and_has_a_description(kind: str) -> None:
    for entry in zoo_entries(kind=kind):
        assert Path(resolve_spec(entry.name, kind)).resolve() == entry.path.resolve(), entry.name
        assert entry.doc and "\n" not in entry.doc, f"{entry.name}: give the file a one-line doc:"


def test_other_folders_contribute_their_encoders_and_metas() -> None:
    assert "baselines/enet_encoder" in list_models(kind="encoder")
    assert "baselines/segnet_decoder" in list_models(kind="meta")
    assert list_models("resnet*", kind="encoder") == ["resnet18", "resnet50"]


def test_an_unknown_kind_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="model, encoder, meta, dataset"):
        list_models(kind="decoder")


def test_verbose_figures_are_the_audits_at_the_default_input() -> None:
    cost = zoo_cost(next(e for e in zoo_entries("resnet18", "encoder")))
    audit = analyze(SPECS / "encoders" / "resnet18.yaml").audit
    assert (cost.params, cost.macs, cost.input) == (audit.params, audit.macs, (224, 224))
    text = render_zoo("skipnet_mobilenet_v1", verbose=True)
    assert "512x1024" in text and "3.369" in text and "6.86" in text
    assert zoo_cost(next(iter(zoo_entries("camvid", "dataset")))).classes == 11
    assert "depend on the encoder" in render_zoo(kind="meta", verbose=True)


def test_a_pattern_without_models_points_to_the_kind_that_has_it() -> None:
    hint = no_match_message("resnet*")
    assert "encoders resnet18, resnet50 (rtsegc models --kind encoder 'resnet*')" in hint
    assert no_match_message("no_such*").endswith("'rtsegc models --kind model' lists them all")


def test_the_models_command_lists_each_kind(capsys) -> None:
    from rtseg_compiler.cli import main

    assert main(["models", "--kind", "encoder", "-v", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "resnet18    224x224      11.177     1.81  ResNet-18" in out and "resnet50" in out
    assert main(["models", "--kind", "dataset", "-q"]) == 0
    assert capsys.readouterr().out.split() == list_models(kind="dataset")
    assert main(["models", "resnet*"]) == 2
    assert "rtsegc models --kind encoder 'resnet*'" in capsys.readouterr().err
