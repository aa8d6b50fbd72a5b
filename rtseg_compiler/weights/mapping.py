"""Weight layouts declared in encoder specs: declarative rename tables, parsed and checked. No torch.

An encoder spec may say how published checkpoints of the same network map onto its layers::

    weights:
      torchvision:
        resnet18:
          doc: torchvision.models.resnet18
          rename:
            "layer1.{b}": "layer1.{b+1}"
            "layer{s}.{b}.downsample.0": "layer{s}_{b+1}.downsample"
            "layer{s}.{b}": "layer{s}_{b+1}"
          head:
            meta: classifier
            rename: {fc: fc.1}

``rename`` is a table of *rules*, or a list of tables applied one after another (passes). A rule
maps a leading run of whole dotted segments of a source key to new segments; the rest of the key
(``conv1.weight`` -> ``.weight``) is kept. Within one table the first matching rule wins, and a key
that no rule matches passes through unchanged, so layers named alike on both sides need no rule.
``{name}`` placeholders match a non-negative integer (torchvision's ``layer1.0``, timm's
``blocks.3.2``); targets may shift them, ``{b+1}`` or ``{b-1}``. There is no regex and no code: a
pattern's literal text is escaped before it is matched, so a spec file stays data.

``head`` names the source's classifier: keys matching its table are the head. They are loaded into
a model whose meta-architecture is ``meta`` (the ImageNet classifier, for equality tests and
fine-tuning) and reported as *not used by this model* anywhere else, never silently dropped.

Everything here is torch-free: ``rtsegc validate`` checks the declarations with located errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..diagnostics import Diagnostic, Location, did_you_mean
from ..spec.load import location_of

__all__ = ["SOURCES", "WEIGHTS_SCHEMA", "Rule", "Head", "Layout", "WeightSource", "MappedKey",
           "parse_layouts", "check_weights", "parse_source", "is_source_text", "WeightSourceError"]

#: The external layouts a spec may declare, and where ``SOURCE:NAME`` without a file is fetched.
#: ``transformers``, ``mmseg`` and ``paddleseg`` layouts need a file
#: (``transformers:segformer_b0@model.safetensors``; ``mmseg:seaformer_tiny@FILE.pth``, a checkpoint
#: saved by mmsegmentation or a fork of it, whose keys start with ``backbone.`` and ``decode_head.``;
#: ``paddleseg:pp_liteseg_t@FILE.pth``, PaddleSeg's keys in a torch file): each names one network of
#: many checkpoints, so the user downloads the one they want.
SOURCES = ("torchvision", "timm", "transformers", "mmseg", "paddleseg")

_SEGMENT = r"[A-Za-z0-9_]+"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:([+-])([0-9]+))?\}")
#: What a pattern or a target may contain: dotted segments of letters, digits, '_' and placeholders.
_KEY_TEXT = r"^(?:[A-Za-z0-9_]|\{[A-Za-z_][A-Za-z0-9_]*(?:[+-][0-9]+)?\})+(?:\.(?:[A-Za-z0-9_]|\{[A-Za-z_][A-Za-z0-9_]*(?:[+-][0-9]+)?\})+)*$"

_RULE_VALUE = {
    "oneOf": [
        {"type": "string", "pattern": _KEY_TEXT},
        {"type": "object", "required": ["to"], "additionalProperties": False,
         "properties": {"to": {"type": "string", "pattern": _KEY_TEXT},
                        "reshape": {"type": "boolean", "description": "reshape a tensor whose element "
                                    "count matches (a Linear weight into a kxk conv)"}}},
    ],
}
_TABLE = {"type": "object", "propertyNames": {"pattern": _KEY_TEXT}, "additionalProperties": _RULE_VALUE}
_RENAME = {"oneOf": [_TABLE, {"type": "array", "items": _TABLE, "minItems": 1, "maxItems": 8}],
           "description": "a rename table, or a list of tables applied in turn"}
_LAYOUT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "doc": {"type": "string"},
        "rename": _RENAME,
        "head": {
            "type": "object", "required": ["meta", "rename"], "additionalProperties": False,
            "properties": {"meta": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    "description": "the meta-architecture these keys fill"},
                           "rename": _TABLE},
        },
    },
}
#: The ``weights`` key of an encoder spec; spec/schema.py puts it into the encoder schema.
WEIGHTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "how published checkpoints map onto this encoder: SOURCE -> NAME -> layout",
    "additionalProperties": False,
    "properties": {source: {"type": "object", "propertyNames": {"pattern": r"^[A-Za-z0-9_.-]+$"},
                            "additionalProperties": _LAYOUT} for source in SOURCES},
}


@dataclass(frozen=True)
class Rule:
    """One ``pattern: target`` line of a rename table."""

    pattern: str
    target: str
    reshape: bool = False
    loc: Location | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", _compile(self.pattern))

    def apply(self, key: str) -> str | None:
        """``key`` with its matched leading segments replaced, or None when the rule does not match."""
        match = self._regex.match(key)  # type: ignore[attr-defined]
        if match is None:
            return None
        values = {name: int(text) for name, text in match.groupdict().items()}

        def fill(m: re.Match[str]) -> str:
            value = values[m.group(1)]
            if m.group(2):
                value += int(m.group(3)) * (1 if m.group(2) == "+" else -1)
            return str(value)

        return _PLACEHOLDER.sub(fill, self.target) + key[match.end():]


def _compile(pattern: str) -> re.Pattern[str]:
    """A regex for the pattern: escaped literal text, ``{name}`` as a named group of digits."""
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>[0-9]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    # A whole number of segments: the match ends at a '.' or at the end of the key.
    return re.compile("".join(out) + r"(?=\.|$)")


@dataclass(frozen=True)
class Head:
    """The source's classifier head: which keys it owns and where they go in ``meta``'s layers."""

    meta: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class MappedKey:
    """Where one source key goes: ``part`` is 'encoder' or 'head'; ``key`` is relative to that part."""

    part: str
    key: str
    reshape: bool = False


@dataclass(frozen=True)
class Layout:
    """One declared external layout: ``torchvision:resnet18`` of ``specs/encoders/resnet18.yaml``."""

    source: str
    name: str
    passes: tuple[tuple[Rule, ...], ...]
    head: Head | None = None
    doc: str = ""
    file: str = ""

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}"

    def map_key(self, key: str) -> MappedKey:
        """The place of one source key in the compiled encoder (or head)."""
        if self.head is not None:
            for rule in self.head.rules:
                new = rule.apply(key)
                if new is not None:
                    return MappedKey("head", new, rule.reshape)
        reshape = False
        for table in self.passes:
            for rule in table:
                new = rule.apply(key)
                if new is not None:
                    key, reshape = new, reshape or rule.reshape
                    break
        return MappedKey("encoder", key, reshape)


# --------------------------------------------------------------------------- parsing and checking

def _rules(table: Mapping[str, Any], path: tuple, doc: Any, file: str,
           problems: list[Diagnostic]) -> tuple[Rule, ...]:
    rules = []
    for pattern, value in table.items():
        target, reshape = (value, False) if isinstance(value, str) else (value["to"], bool(value.get("reshape")))
        loc = location_of(doc, (*path, pattern), key=True) or Location(file)
        names = [m.group(1) for m in _PLACEHOLDER.finditer(pattern)]
        shifted = [m.group(0) for m in _PLACEHOLDER.finditer(pattern) if m.group(2)]
        if shifted:
            problems.append(Diagnostic(f"weights: pattern '{pattern}' shifts {shifted[0]}; only a target "
                                       "may add to a placeholder", loc, hint="write {b} in the pattern "
                                       "and {b+1} in the target"))
            continue
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(Diagnostic(f"weights: placeholder {{{repeated[0]}}} appears twice in "
                                       f"'{pattern}'", loc, hint="give each placeholder its own name"))
            continue
        if re.search(r"\}\{", pattern):
            problems.append(Diagnostic(f"weights: two placeholders touch in '{pattern}', so a number "
                                       "could split either way", loc, hint="separate them with text or a '.'"))
            continue
        for m in _PLACEHOLDER.finditer(target):
            if m.group(1) not in names:
                hint = did_you_mean(m.group(1), names) or (
                    f"the pattern has {', '.join('{' + n + '}' for n in names)}" if names
                    else "the pattern has no placeholders")
                problems.append(Diagnostic(f"weights: target '{target}' uses {{{m.group(1)}}}, which the "
                                           f"pattern '{pattern}' does not match", loc, hint=hint))
                break
        else:
            rules.append(Rule(pattern, target, reshape, loc))
    return tuple(rules)


def parse_layouts(doc: Mapping[str, Any], file: str,
                  problems: list[Diagnostic] | None = None) -> dict[tuple[str, str], Layout]:
    """Every layout an (already schema-valid) encoder document declares, by ``(source, name)``."""
    problems = problems if problems is not None else []
    out: dict[tuple[str, str], Layout] = {}
    for source, layouts in (doc.get("weights") or {}).items():
        for name, body in layouts.items():
            path = ("weights", source, name)
            rename = body.get("rename") or {}
            tables = rename if isinstance(rename, list) else [rename]
            passes = tuple(_rules(t, (*path, "rename", i) if isinstance(rename, list) else (*path, "rename"),
                                  doc, file, problems) for i, t in enumerate(tables))
            head = None
            if body.get("head"):
                head = Head(body["head"]["meta"],
                            _rules(body["head"]["rename"], (*path, "head", "rename"), doc, file, problems))
            out[(source, name)] = Layout(source, name, passes, head, body.get("doc", ""), file)
    return out


def check_weights(doc: Any, file: str) -> list[Diagnostic]:
    """Located errors in an encoder's ``weights`` declaration beyond what the schema checks."""
    problems: list[Diagnostic] = []
    if isinstance(doc, Mapping) and doc.get("kind") == "encoder" and doc.get("weights"):
        parse_layouts(doc, file, problems)
    return problems


# --------------------------------------------------------------------------- SOURCE:NAME[@PATH]

class WeightSourceError(ValueError):
    """A weight source that cannot be used: bad syntax, unknown source or name, unreadable file."""


@dataclass(frozen=True)
class WeightSource:
    """``torchvision:resnet18`` (fetched when asked) or ``torchvision:resnet18@r18.pth`` (a local file)."""

    source: str
    name: str
    path: str | None = None

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}"

    def __str__(self) -> str:
        return self.label + (f"@{self.path}" if self.path else "")


_SOURCE_TEXT = re.compile(r"^(?P<source>[A-Za-z][A-Za-z0-9_]*):(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<path>.+))?$")


def is_source_text(text: str) -> bool:
    """Whether ``text`` is written ``SOURCE:NAME[@PATH]`` with a known SOURCE (else it is a file name)."""
    m = _SOURCE_TEXT.match(str(text))
    return bool(m) and m.group("source") in SOURCES


def parse_source(text: str) -> WeightSource:
    """``SOURCE:NAME[@PATH]`` -> :class:`WeightSource`; :class:`WeightSourceError` says what is wrong."""
    m = _SOURCE_TEXT.match(str(text))
    if not m:
        raise WeightSourceError(f"invalid weight source {text!r}: write SOURCE:NAME or SOURCE:NAME@FILE, "
                                f"e.g. torchvision:resnet18 or torchvision:resnet18@r18.pth")
    if m.group("source") not in SOURCES:
        hint = did_you_mean(m.group("source"), SOURCES) or f"known sources: {', '.join(SOURCES)}"
        raise WeightSourceError(f"unknown weight source '{m.group('source')}' in {text!r} ({hint})")
    return WeightSource(m.group("source"), m.group("name"), m.group("path"))

