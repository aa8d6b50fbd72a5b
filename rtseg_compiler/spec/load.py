"""Load a spec file into plain Python data that remembers where every value came from.

Spec files are untrusted: people share them like code. This loader therefore

* decodes strictly as UTF-8 and refuses files over :data:`MAX_FILE_BYTES`;
* walks the YAML *event* stream first (PyYAML's parser is iterative), so a
  file nested 100,000 levels deep is refused before the recursive composer
  could overflow the Python stack;
* composes with PyYAML's **safe** resolver and never constructs arbitrary
  tags: ``!!python/object`` and friends are located errors, not objects;
* expands aliases itself under a node budget, so a "billion laughs" file
  fails after :data:`MAX_NODES` nodes (milliseconds, a few MB) instead of
  building 10^9 of them, and a self-referencing alias is an error;
* refuses duplicate keys, which YAML silently resolves to the last one.

The result is built from :class:`LocatedMap` and :class:`LocatedList`, which are
ordinary ``dict``/``list`` subclasses (so jsonschema validates them as is)
carrying the :class:`~rtseg_compiler.diagnostics.Location` of each key and value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ..diagnostics import Diagnostics, Location, SpecError

__all__ = [
    "LocatedMap",
    "LocatedList",
    "load_spec_file",
    "load_spec_text",
    "location_of",
    "MAX_FILE_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
]

#: A full ResNet-18 spec is about 3 KB; a megabyte leaves room for generated specs.
MAX_FILE_BYTES = 1_000_000
#: Specs nest maps and lists four or five levels; 64 is far beyond any real one.
MAX_DEPTH = 64
#: Nodes after alias expansion. The largest zoo spec has about 600.
MAX_NODES = 100_000

_CORE_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class LocatedMap(dict):
    """A mapping whose keys and values know their file position."""

    loc: Location
    key_locs: dict[str, Location]
    value_locs: dict[str, Location]

    def key_loc(self, key: str) -> Location:
        return self.key_locs.get(key, self.loc)

    def value_loc(self, key: str) -> Location:
        return self.value_locs.get(key, self.loc)


class LocatedList(list):
    """A sequence whose items know their file position."""

    loc: Location
    item_locs: list[Location]

    def item_loc(self, index: int) -> Location:
        if 0 <= index < len(self.item_locs):
            return self.item_locs[index]
        return self.loc


def location_of(root: Any, path: tuple | list, *, key: bool = False) -> Location | None:
    """The location of the value at ``path`` (keys and indices) below ``root``.

    Stops at the deepest located container when the path leaves the tree, so
    an error about a missing key points at the mapping that lacks it.
    """
    node = root
    loc = getattr(root, "loc", None)
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, LocatedMap) and step in node:
            loc = node.key_loc(step) if (key and last) else node.value_loc(step)
            node = node[step]
        elif isinstance(node, LocatedList) and isinstance(step, int) and 0 <= step < len(node):
            loc = node.item_loc(step)
            node = node[step]
        else:
            break
    return loc


def load_spec_file(path: str | Path) -> Any:
    """Read, decode and load one spec file; every failure is a located :class:`SpecError`."""
    name = str(path)
    diags = Diagnostics()
    p = Path(path)
    try:
        if p.is_dir():
            diags.error("is a directory, not a spec file", Location(name),
                        hint="pass a .yaml file")
            diags.raise_if_errors()
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            diags.error(f"file is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}",
                        Location(name), hint="spec files are small; is this the right file?")
            diags.raise_if_errors()
        data = p.read_bytes()
    except SpecError:
        raise
    except FileNotFoundError:
        diags.error("no such file", Location(name))
        diags.raise_if_errors()
    except PermissionError:
        diags.error("permission denied", Location(name))
        diags.raise_if_errors()
    except OSError as exc:
        diags.error(f"cannot read file: {exc.strerror or exc}", Location(name))
        diags.raise_if_errors()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        diags.error(f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                    Location(name, line, col), hint="save the spec as UTF-8 text")
        diags.raise_if_errors()
    return load_spec_text(text, name)


def load_spec_text(text: str, name: str = "<spec>") -> Any:
    """Load YAML text (already decoded) into located data; see the module docstring."""
    diags = Diagnostics()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        diags.error(f"spec text is over the limit of {MAX_FILE_BYTES:,} bytes", Location(name))
        diags.raise_if_errors()
    if not text.strip():
        diags.error("file is empty", Location(name, 1, 1),
                    hint="a spec starts with 'kind: encoder', 'kind: meta' or 'kind: model'")
        diags.raise_if_errors()
    _check_event_stream(text, name, diags)
    diags.raise_if_errors()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        diags.error(_yaml_problem(exc), _mark_location(exc, name))
        diags.raise_if_errors()
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML marks nearly everything
        diags.error(f"invalid YAML: {exc}", Location(name))
        diags.raise_if_errors()
    if node is None:
        diags.error("file holds no YAML document", Location(name, 1, 1))
        diags.raise_if_errors()
    builder = _Builder(name, diags)
    value = builder.build(node, depth=0)
    diags.raise_if_errors()
    return value


def _check_event_stream(text: str, name: str, diags: Diagnostics) -> None:
    """Depth, size and document-count checks on the event stream, before composing."""
    depth = 0
    events = 0
    documents = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            events += 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    diags.error(f"nesting deeper than {MAX_DEPTH} levels",
                                _event_location(event, name),
                                hint="spec files nest a few levels; this looks generated or hostile")
                    return
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    diags.error("more than one YAML document in a spec file",
                                _event_location(event, name), hint="remove the '---' separator")
                    return
            if events > MAX_NODES:
                diags.error(f"more than {MAX_NODES:,} YAML events", _event_location(event, name))
                return
    except yaml.MarkedYAMLError as exc:
        diags.error(_yaml_problem(exc), _mark_location(exc, name))


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem:
        problem = f"{problem} ({exc.context})"
    return f"invalid YAML: {problem}"


def _mark_location(exc: yaml.MarkedYAMLError, name: str) -> Location:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return Location(name)
    return Location(name, mark.line + 1, mark.column + 1)


def _event_location(event: Any, name: str) -> Location:
    mark = event.start_mark
    return Location(name, mark.line + 1, mark.column + 1)


class _Builder:
    """Turns composed YAML nodes into located containers, expanding aliases under a budget."""

    def __init__(self, name: str, diags: Diagnostics):
        self.name = name
        self.diags = diags
        self.count = 0
        self.active: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()
        self.exhausted = False

    def loc(self, node: yaml.Node) -> Location:
        return Location(self.name, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, depth: int) -> Any:
        if self.exhausted:
            return None
        self.count += 1
        if self.count > MAX_NODES:
            self.exhausted = True
            self.diags.error(
                f"the YAML expands to more than {MAX_NODES:,} nodes (aliases are expanded)",
                self.loc(node), hint="anchors and aliases that multiply ('billion laughs') are refused")
            return None
        if depth > MAX_DEPTH:
            self.exhausted = True
            self.diags.error(f"nesting deeper than {MAX_DEPTH} levels after alias expansion",
                             self.loc(node))
            return None
        if id(node) in self.active:
            self.exhausted = True
            self.diags.error("an alias refers to a node that contains it (recursive YAML)",
                             self.loc(node))
            return None
        tag = node.tag
        if tag not in _CORE_TAGS and tag != _TIMESTAMP:
            self.diags.error(f"YAML tag '{tag}' is not allowed in a spec file", self.loc(node),
                             hint="specs use plain maps, lists, strings, numbers and booleans")
            return None
        if isinstance(node, yaml.MappingNode):
            return self.build_map(node, depth)
        if isinstance(node, yaml.SequenceNode):
            return self.build_list(node, depth)
        return self.build_scalar(node)

    def build_map(self, node: yaml.MappingNode, depth: int) -> LocatedMap:
        out = LocatedMap()
        out.loc, out.key_locs, out.value_locs = self.loc(node), {}, {}
        self.active.add(id(node))
        try:
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.diags.error("YAML merge keys ('<<') are not supported in spec files",
                                     self.loc(key_node), hint="write the keys out, or use a block")
                    continue
                key = self.build(key_node, depth + 1)
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    if not self.exhausted:
                        self.diags.error(f"mapping key {key!r} must be a string", self.loc(key_node))
                    continue
                key = str(key)
                if key in out:
                    self.diags.error(f"duplicate key '{key}'", self.loc(key_node),
                                     hint=f"first given at {out.key_locs[key]}")
                    continue
                out[key] = self.build(value_node, depth + 1)
                out.key_locs[key] = self.loc(key_node)
                out.value_locs[key] = self.loc(value_node)
        finally:
            self.active.discard(id(node))
        return out

    def build_list(self, node: yaml.SequenceNode, depth: int) -> LocatedList:
        out = LocatedList()
        out.loc, out.item_locs = self.loc(node), []
        self.active.add(id(node))
        try:
            for item in node.value:
                out.append(self.build(item, depth + 1))
                out.item_locs.append(self.loc(item))
        finally:
            self.active.discard(id(node))
        return out

    def build_scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag == _TIMESTAMP:
            return node.value  # a date-like string stays a string
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            self.diags.error(f"cannot read scalar {node.value[:40]!r}: {exc}", self.loc(node))
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.diags.error(f"non-finite number {node.value!r}", self.loc(node),
                             hint="use a finite number")
            return None
        return value
