"""What ``--save-code`` copies from a user op's plugin (rtseg_compiler/emit/embed.py), without torch.

A throwaway plugin module is written to a temporary folder and imported; the tests check which of
its names a copied function needs, in what order the copies come, and that what cannot be copied is
an error naming the op, the layer and the name.
"""

from __future__ import annotations

import ast
import importlib
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from rtseg_compiler.emit.embed import Embedding, SourceEmitError, _global_names, _literal_text, plugin_home

PLUGIN = '''\
from __future__ import annotations

import math
from math import sqrt as root
from typing import Mapping

SCALE = 0.5
TABLE = {"a": (1, 2), "b": [3.0, None]}
CACHE = object()


def base(x: Mapping[str, float]) -> float:
    return x * SCALE


def uses_base(x):
    total = base(x) + math.pi + root(2.0)
    return total


def uses_cache(x):
    return CACHE


def renamed(x):
    return alias(x)


alias = base


class Twice:
    factor = 2

    def __call__(self, x):
        return base(x) * self.factor + len(TABLE)


def outer():
    def inner(y):
        return y
    return inner
'''


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[object]:
    (tmp_path / "uo_embed_plugin.py").write_text(PLUGIN)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("uo_embed_plugin")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("uo_embed_plugin", None)


def _copy(obj, embedding: Embedding | None = None) -> Embedding:
    embedding = embedding or Embedding({"CompiledNet"})
    embedding.add(obj, op="my_op", where="head.x", home="uo_embed_plugin")
    return embedding


def test_global_names_skip_annotations_parameters_and_locals():
    tree = ast.parse(textwrap.dedent("""
        def f(x: Tensor, n: int = DEFAULT) -> Result:
            y = helper(x) + CONST
            for i in range(n):
                y = y + i
            return sorted(y, key=lambda v: -v * FACTOR)
    """))
    assert _global_names(tree) == ["DEFAULT", "helper", "CONST", "range", "sorted", "FACTOR"]


@pytest.mark.parametrize("value, text", [
    (0.25, "0.25"), ((1,), "(1,)"), ({"a": [1, None]}, "{'a': [1, None]}"),
    (frozenset({2}), "frozenset({2})"),
    (float("inf"), None), (object(), None), ([1, object()], None),
])
def test_literal_constants(value, text):
    assert _literal_text(value) == text


def test_copies_come_after_what_they_call_with_imports_and_constants(plugin):
    embedding = _copy(plugin.uses_base)
    assert list(embedding.definitions) == ["base", "uses_base"]
    assert embedding.constants == {"SCALE": "0.5"}
    assert embedding.imports == {"import math", "from math import sqrt as root"}
    text = "\n".join(embedding.text())
    assert text.index("SCALE = 0.5") < text.index("def base(") < text.index("def uses_base(")
    assert "Mapping" not in embedding.imports  # an annotation: never evaluated in the file


def test_a_class_is_copied_with_its_methods_needs(plugin):
    embedding = _copy(plugin.Twice)
    assert list(embedding.definitions) == ["base", "Twice"]
    assert embedding.constants == {"SCALE": "0.5", "TABLE": "{'a': (1, 2), 'b': [3.0, None]}"}


@pytest.mark.parametrize("name, message", [
    ("uses_cache", "op 'my_op' (layer 'head.x'): uses_cache uses 'CACHE' (of type object), which the saved "
                   "file can neither copy"),
    ("renamed", "renamed calls uo_embed_plugin.base by another name, 'alias'"),
])
def test_what_cannot_be_copied_is_named(plugin, name, message):
    with pytest.raises(SourceEmitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _copy(getattr(plugin, name))


def test_nested_functions_and_taken_names_are_refused(plugin):
    with pytest.raises(SourceEmitError, match="defined inside another function or class"):
        _copy(plugin.outer())
    with pytest.raises(SourceEmitError, match="under the name 'base', which another definition"):
        _copy(plugin.base, Embedding({"base"}))


def test_plugin_home_is_the_top_level_package():
    def build():
        return None

    build.__module__ = "my_pkg.ops.blur"
    assert plugin_home(build) == "my_pkg"
