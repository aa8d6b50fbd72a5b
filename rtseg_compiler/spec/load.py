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
import stat
from pathlib import Path
from typing import Any

import yaml

from ..diagnostics import Diagnostics, Location, SpecError

__all__ = [
    "LocatedMap",
    "LocatedList",
    "load_spec_file",
    "load_spec_text",
    "read_spec_text",
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
    return load_spec_text(read_spec_text(path), str(path))


def read_spec_text(path: str | Path) -> str:
    """The decoded text of one spec file, within the size limit; failures are located SpecErrors."""
    name = str(path)
    diags = Diagnostics()
    p = Path(path)
    if not name.strip():
        diags.error("empty file name", Location("<spec>"), hint="pass a .yaml file")
        diags.raise_if_errors()
    try:
        if p.is_dir():
            diags.error("is a directory, not a spec file", Location(name),
                        hint="pass a .yaml file")
            diags.raise_if_errors()
        info = p.stat()
        if not stat.S_ISREG(info.st_mode):
            # /dev/zero or a FIFO would be read forever (or block): refuse before opening.
            diags.error("not a regular file", Location(name), hint="pass a .yaml file")
            diags.raise_if_errors()
        if info.st_size > MAX_FILE_BYTES:
            diags.error(f"file is {info.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}",
                        Location(name), hint="spec files are small; is this the right file?")
            diags.raise_if_errors()
        with p.open("rb") as handle:  # bounded: the file may grow between stat and read
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            diags.error(f"file is over the limit of {MAX_FILE_BYTES:,} bytes", Location(name))
            diags.raise_if_errors()
    except SpecError:
        raise
    except FileNotFoundError:
        from ..zoo import zoo_hint

        diags.error("no such file", Location(name), hint=zoo_hint(name))
        diags.raise_if_errors()
    except PermissionError:
        diags.error("permission denied", Location(name))
        diags.raise_if_errors()
    except OSError as exc:
        diags.error(f"cannot read file: {exc.strerror or exc}", Location(name))
        diags.raise_if_errors()
    except ValueError:  # a path holding a NUL byte, e.g. from a model's 'encoder: "a\\0b"'
        diags.error("invalid file name (it contains a NUL character)",
                    Location(name.replace("\0", "\\0")))
        diags.raise_if_errors()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        diags.error(f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                    Location(name, line, col), hint="save the spec as UTF-8 text")
        diags.raise_if_errors()
    return text


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
    node = None
    for loader in _loaders(text):
        try:
            node = yaml.compose(text, Loader=loader)
            break
        except yaml.YAMLError as exc:
            if loader is yaml.SafeLoader or len(text) > _REPARSE_LIMIT:
                _report_yaml_error(exc, text, name, diags)
                diags.raise_if_errors()
    if node is None:
        diags.error("file holds no YAML document", Location(name, 1, 1))
        diags.raise_if_errors()
    if not isinstance(node, yaml.MappingNode):
        what = "a list" if isinstance(node, yaml.SequenceNode) else f"the single value {node.value[:40]!r}"
        diags.error(f"a spec file must be a mapping of 'key: value' lines, not {what}",
                    Location(name, node.start_mark.line + 1, node.start_mark.column + 1),
                    hint="start with 'kind: encoder', 'kind: meta' or 'kind: model'")
        diags.raise_if_errors()
    builder = _Builder(name, diags)
    if builder.expanded_size(node) > MAX_NODES:
        diags.raise_if_errors()
    value = builder.build(node, depth=0)
    diags.raise_if_errors()
    return value


#: libyaml (PyYAML's C extension) parses about 20x faster than the pure-Python parser: a
#: 400 KB file takes 0.15 s instead of 2.6 s. Marks and node graphs are the same.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: On a syntax error in a file up to this size, PyYAML's parser runs again for its message,
#: which names the character ("found character '\\t'") where libyaml's does not.
_REPARSE_LIMIT = 200_000


def _loaders(text: str) -> tuple[type, ...]:
    if _FAST_LOADER is yaml.SafeLoader:
        return (yaml.SafeLoader,)
    return (_FAST_LOADER, yaml.SafeLoader)


def _check_event_stream(text: str, name: str, diags: Diagnostics) -> None:
    """Depth, size and document-count checks on the event stream, before composing.

    The limits must fire at the same place with the same message whichever parser runs.
    libyaml's scanner reads ahead of its parser (in flow context a ``[`` may still turn out
    to open a simple key), and since libyaml 0.2.5 it has a nesting limit of its own (1,000
    levels, "exceeded maximum nesting depth"): in ``a: [[[...`` it raises that before
    yielding a single event, so our 64-level check never sees depth 65. PyYAML 6.0.4's
    wheels bundle such a libyaml; 6.0.3's do not. So when libyaml fails, the pure-Python
    parser walks the text it had read (up to the end of the failing line) with our limits
    first; only if none of them is crossed there does the syntax error itself get reported.
    """
    for loader in _loaders(text):
        try:
            _walk_events(text, name, diags, loader)
            return
        except yaml.YAMLError as exc:
            if loader is yaml.SafeLoader:
                _report_yaml_error(exc, text, name, diags)
                return
            if _limit_crossed_before(exc, text, name, diags):
                return
            if len(text) > _REPARSE_LIMIT:
                _report_yaml_error(exc, text, name, diags)
                return


def _limit_crossed_before(exc: yaml.YAMLError, text: str, name: str, diags: Diagnostics) -> bool:
    """Whether the pure-Python walk of the text up to libyaml's error reports one of our limits."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    end = len(text) if mark is None else text.find("\n", mark.index)
    prefix = text if end < 0 else text[:end]
    found = Diagnostics()
    try:
        _walk_events(prefix, name, found, yaml.SafeLoader)
    except yaml.YAMLError:
        pass  # the prefix ends mid-document, or holds the same syntax error
    if not found.has_errors:
        return False
    diags.extend(found.items)
    return True


def _report_yaml_error(exc: yaml.YAMLError, text: str, name: str, diags: Diagnostics) -> None:
    if isinstance(exc, yaml.MarkedYAMLError):
        diags.error(_yaml_problem(exc), _mark_location(exc, name))
    elif isinstance(exc, yaml.reader.ReaderError):
        diags.error(f"character U+{exc.character:04X} is not allowed in YAML (control characters "
                    "are refused)", _offset_location(text, exc.position, name),
                    hint="remove it, or write it as an escape inside a double-quoted string")
    else:  # pragma: no cover - every parser error above is marked
        diags.error(f"invalid YAML: {exc}", Location(name))


def _walk_events(text: str, name: str, diags: Diagnostics, loader: type) -> None:
    depth = 0
    events = 0
    documents = 0
    for event in yaml.parse(text, Loader=loader):
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


def _offset_location(text: str, offset: int, name: str) -> Location:
    line = text.count("\n", 0, offset) + 1
    return Location(name, line, offset - (text.rfind("\n", 0, offset) + 1) + 1)


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

    def expanded_size(self, root: yaml.Node) -> int:
        """Nodes the document has once aliases are expanded, counted without expanding them.

        An alias is the same node object as its anchor, so a memo per node makes
        this linear in the composed (unexpanded) size: a "billion laughs" file is
        measured at 10^9 and refused in microseconds, before anything is built.
        Returns at most MAX_NODES + 1 and reports the error itself.
        """
        memo: dict[int, int] = {}
        on_path: set[int] = set()
        culprit: list[yaml.Node] = []  # the innermost container that went over: the one to blame

        def size(node: yaml.Node, depth: int) -> int:
            key = id(node)
            if key in memo:
                return memo[key]
            if key in on_path:  # recursive alias: the builder reports it with its location
                return 1
            if depth > MAX_DEPTH:  # likewise reported by the builder; stop walking here
                return 1
            total = 1
            if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
                on_path.add(key)
                children = (c for pair in node.value for c in pair) if isinstance(
                    node, yaml.MappingNode) else iter(node.value)
                for child in children:
                    total += size(child, depth + 1)
                    if total > MAX_NODES:
                        if not culprit:
                            culprit.append(node)
                        break
                on_path.discard(key)
            memo[key] = total
            return total

        total = size(root, 0)
        if total > MAX_NODES:
            self.diags.error(
                f"the YAML expands to more than {MAX_NODES:,} nodes (aliases are expanded)",
                self.loc(culprit[0] if culprit else root),
                hint="anchors and aliases that multiply ('billion laughs') are refused")
        return total

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
            reason = str(exc).split(";")[0]  # drop Python's "use sys.set_int_max_str_digits()"
            self.diags.error(f"cannot read scalar {node.value[:40]!r}: {reason}", self.loc(node))
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.diags.error(f"non-finite number {node.value!r}", self.loc(node),
                             hint="use a finite number")
            return None
        return value
