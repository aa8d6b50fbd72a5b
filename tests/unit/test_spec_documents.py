"""Specs as documents (rtseg_compiler/spec/sources.py): texts in, the same analysis out, errors located
in the names the texts were given; a model's encoder/meta references resolved in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SPECS
from rtseg_compiler import SpecError, SpecSource, analyze
from rtseg_compiler.spec.sources import SpecReader, bind_model_parts, model_parts, read_sources

MODEL = SPECS / "models" / "skipnet_mobilenet_v1.yaml"
ENCODER = SPECS / "encoders" / "mobilenet_v1.yaml"
META = SPECS / "meta" / "skipnet.yaml"
SIZE = (64, 96)


def _source(path: Path, name: str | None = None) -> SpecSource:
    return SpecSource(name or str(path), path.read_text(encoding="utf-8"))


def test_texts_give_the_analysis_their_files_give() -> None:
    from_files = analyze(encoder=ENCODER, meta=META, input_size=SIZE)
    from_texts = analyze(encoder=_source(ENCODER, "mine/enc.yaml"), meta=_source(META, "mine/meta.yaml"),
                         input_size=SIZE)
    assert from_texts.audit.params == from_files.audit.params
    assert from_texts.audit.macs == from_files.audit.macs
    assert from_texts.graph.files == {"encoder": "mine/enc.yaml", "meta": "mine/meta.yaml"}
    assert from_texts.sources["encoder"].text == ENCODER.read_text(encoding="utf-8")


def test_documents_stand_for_the_files_a_model_names() -> None:
    """A model text and the files it names, none of them on disk, under names of the caller's choice."""
    documents = {"elsewhere/models/m.yaml": MODEL.read_text(encoding="utf-8"),
                 "elsewhere/encoders/mobilenet_v1.yaml": ENCODER.read_text(encoding="utf-8"),
                 "elsewhere/meta/skipnet.yaml": META.read_text(encoding="utf-8")}
    analysis = analyze("elsewhere/models/m.yaml", SIZE, documents=documents)
    assert analysis.audit.macs == analyze(MODEL, SIZE).audit.macs
    assert set(analysis.sources) == {"model", "encoder", "meta"}
    expected = Path("elsewhere/encoders/mobilenet_v1.yaml").resolve()
    assert Path(analysis.graph.files["encoder"]).resolve() == expected


def test_an_error_in_a_text_points_at_the_name_it_was_given() -> None:
    broken = ENCODER.read_text(encoding="utf-8").replace("kind: encoder", "kind: encoder\nbogus_key: 1", 1)
    with pytest.raises(SpecError) as caught:
        analyze(encoder=SpecSource("user/encoder.yaml", broken), meta=META, input_size=SIZE)
    located = [d for d in caught.value.diagnostics if d.loc is not None and d.loc.file == "user/encoder.yaml"]
    assert located and located[0].loc.line == broken.splitlines().index("bogus_key: 1") + 1, caught.value


def test_a_model_file_may_name_zoo_specs(tmp_path: Path) -> None:
    model = tmp_path / "mine.yaml"
    model.write_text("kind: model\nencoder: mobilenet_v1\nmeta: skipnet\nnum_classes: 5\n")
    analysis = analyze(model, SIZE)
    pair = analyze(encoder=ENCODER, meta=META, num_classes=5, input_size=SIZE)
    assert analysis.audit.params == pair.audit.params
    assert Path(analysis.graph.files["encoder"]).resolve() == ENCODER.resolve()


def test_a_file_beside_the_model_wins_over_the_zoo(tmp_path: Path) -> None:
    (tmp_path / "mobilenet_v1").write_text(ENCODER.read_text(encoding="utf-8"))
    doc = {"encoder": "mobilenet_v1", "meta": "no_such_meta"}
    parts = model_parts(tmp_path / "model.yaml", doc)
    assert parts["encoder"] == tmp_path / "mobilenet_v1"
    assert parts["meta"] == tmp_path / "no_such_meta"  # neither a file nor a zoo name: the error names this


def test_a_missing_reference_is_still_no_such_file_where_the_compiler_looked(tmp_path: Path) -> None:
    model = tmp_path / "mine.yaml"
    model.write_text("kind: model\nencoder: ../nowhere/enc.yaml\nmeta: skipnet\nnum_classes: 5\n")
    with pytest.raises(SpecError, match="no such file") as caught:
        analyze(model, SIZE)
    assert any("referenced at" in note for d in caught.value.diagnostics for note in d.notes)


def test_read_sources_and_bind_model_parts_round_trip(tmp_path: Path) -> None:
    """What a checkpoint embeds rebuilds the model wherever its references pointed."""
    sources = read_sources(MODEL)
    assert set(sources) == {"model", "encoder", "meta"}
    moved = SpecSource("/gone/models/skipnet.yaml", sources["model"].text)
    documents = bind_model_parts(moved, sources["encoder"], sources["meta"])
    analysis = analyze(moved, SIZE, documents=documents)
    assert analysis.audit.macs == analyze(MODEL, SIZE).audit.macs
    reader = SpecReader(documents)
    assert reader.has("/gone/models/../encoders/mobilenet_v1.yaml")
