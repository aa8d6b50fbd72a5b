"""Weight layouts declared in specs: declarative rename tables, parsed and checked. No torch.

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

A layout's source is any name (``mmseg``, ``mylab``, ``file``), not only a library's: sources other
than :data:`FETCHABLE` are always read from a file (``mylab:segformer_b0@ckpt.pt``). A meta spec may
declare layouts too (its targets are keys of the meta's layers, without ``head.``), and so may a model
spec (its targets are whole-model keys, ``encoder.`` or ``head.`` included). For one model,
``SOURCE:NAME`` means (:func:`resolve_layout`): the model spec's layout of that label alone; else the
meta's and the encoder's together, the meta's claiming every key one of its rules matches (as an
encoder layout's ``head`` table does) and the encoder's taking the rest; else whichever of them declares
it. A label that two places would both fill is a located error (:func:`layout_clashes`).

Everything here is torch-free: ``rtsegc validate`` checks the declarations with located errors.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..diagnostics import Diagnostic, Location, did_you_mean
from ..spec.load import location_of

__all__ = ["FETCHABLE", "SOURCES", "SOURCE_PATTERN", "WEIGHTS_SCHEMA", "Rule", "Head", "Layout",
           "ModelLayout", "WeightSource", "MappedKey", "declared_layouts", "layout_clashes", "parse_layouts",
           "check_weights", "parse_source", "is_source_text", "resolve_layout", "weights_schema",
           "WeightSourceError"]

#: The sources rtsegc knows by name. A source of any other name is the user's (``mylab``, ``file``)
#: and works the same way, read from a file; a near miss of one of these draws a warning.
#: ``mmseg`` is a checkpoint saved by mmsegmentation or a fork of it (``mmseg:seaformer_tiny@FILE.pth``),
#: whose keys start with ``backbone.`` and ``decode_head.``; ``paddleseg`` is PaddleSeg's keys in a torch
#: file (``paddleseg:pp_liteseg_t@FILE.pth``); ``efficientvit`` is a file saved by the EfficientViT
#: authors' package (mit-han-lab/efficientvit), keys ``backbone.*`` and ``head.*``
#: (``efficientvit:efficientvit_seg_b0@efficientvit_seg_b0_cityscapes.pt``).
SOURCES = ("torchvision", "timm", "transformers", "mmseg", "paddleseg", "efficientvit")
#: The sources whose weights ``SOURCE:NAME`` without ``@PATH`` fetches through the library's own API;
#: every other source (``transformers``, ``mmseg``, ``paddleseg`` and ``efficientvit`` included: each
#: names one network of many checkpoints, so the user downloads the one they want) is read from the file
#: the user names.
FETCHABLE = ("torchvision", "timm")
#: What a source name may be: a letter, then letters, digits and '_' (32 at most), so that
#: ``SOURCE:NAME@PATH`` parses one way.
SOURCE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
#: The spec kinds that may declare layouts, and what their targets are keys of.
_PARTS = {"encoder": "encoder", "meta": "head", "model": "model"}

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
_LAYOUT_BASE = {"doc": {"type": "string"}, "rename": _RENAME}
_LAYOUT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_LAYOUT_BASE,
        "head": {
            "type": "object", "required": ["meta", "rename"], "additionalProperties": False,
            "properties": {"meta": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    "description": "the meta-architecture these keys fill"},
                           "rename": _TABLE},
        },
    },
}


def weights_schema(kind: str) -> dict[str, Any]:
    """The ``weights`` key of a ``kind`` spec (encoder, meta or model): SOURCE -> NAME -> layout.

    Only an encoder's layouts have ``head`` (the source's classifier, routed by meta-architecture):
    a meta's layout maps the meta's own layers and a model's the whole model already.
    """
    layout = _LAYOUT if kind == "encoder" else {**_LAYOUT, "properties": dict(_LAYOUT_BASE)}
    onto = {"encoder": "this encoder", "meta": "this meta-architecture's layers",
            "model": "the whole model (targets start with encoder. or head.)"}[kind]
    return {
        "type": "object",
        "description": f"how checkpoints of a source map onto {onto}: SOURCE -> NAME -> layout",
        "propertyNames": {"pattern": SOURCE_PATTERN},
        "additionalProperties": {"type": "object", "propertyNames": {"pattern": r"^[A-Za-z0-9_.-]+$"},
                                 "additionalProperties": layout},
    }


#: The ``weights`` key of an encoder spec; spec/schema.py puts :func:`weights_schema` into each kind.
WEIGHTS_SCHEMA: dict[str, Any] = weights_schema("encoder")


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
    """Where one source key goes: ``part`` is 'encoder', 'head' or 'model' (a model spec's layout, whose
    ``key`` is a whole-model key); ``key`` is relative to that part."""

    part: str
    key: str
    reshape: bool = False


@dataclass(frozen=True)
class Layout:
    """One declared layout: ``torchvision:resnet18`` of ``specs/encoders/resnet18.yaml``.

    ``kind`` is the kind of spec that declares it: an encoder's targets are encoder keys, a meta's are
    keys of the meta's layers, a model's are whole-model keys. ``loc`` is where NAME is declared.
    """

    source: str
    name: str
    passes: tuple[tuple[Rule, ...], ...]
    head: Head | None = None
    doc: str = ""
    file: str = ""
    kind: str = "encoder"
    loc: Location | None = None

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}"

    @property
    def part(self) -> str:
        """What the targets are keys of: 'encoder', 'head' (a meta's layers) or 'model'."""
        return _PARTS[self.kind]

    def claims(self, key: str) -> bool:
        """Whether one of this layout's rules matches ``key`` (how a meta's layout picks its keys out
        of a whole-model checkpoint, before the encoder's layout takes the rest)."""
        return any(rule.apply(key) is not None for table in self.passes for rule in table)

    def map_key(self, key: str) -> MappedKey:
        """The place of one source key in the part this layout fills (or in the head)."""
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
        return MappedKey(self.part, key, reshape)


@dataclass(frozen=True)
class ModelLayout:
    """What ``SOURCE:NAME`` means for one model (:func:`resolve_layout`): its declared layouts of that
    label, in the order they claim keys. One layout, or a meta's then an encoder's: the meta's takes
    every key one of its rules matches, the encoder's the rest."""

    source: str
    name: str
    layouts: tuple[Layout, ...]

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}"

    @property
    def head(self) -> Head | None:
        """The classifier-head table of an encoder's layout (routed by meta name), if it has one."""
        return next((layout.head for layout in self.layouts if layout.head is not None), None)

    @property
    def parts(self) -> frozenset[str]:
        """The parts of the model the declared layouts fill: 'model', or 'encoder' and/or 'head'."""
        return frozenset(layout.part for layout in self.layouts)

    def map_key(self, key: str) -> MappedKey:
        for layout in self.layouts[:-1]:
            if layout.claims(key):
                return layout.map_key(key)
        return self.layouts[-1].map_key(key)


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
    """Every layout an (already schema-valid) encoder, meta or model document declares, by
    ``(source, name)``."""
    problems = problems if problems is not None else []
    kind = str(doc.get("kind") or "encoder")
    kind = kind if kind in _PARTS else "encoder"
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
            out[(source, name)] = Layout(source, name, passes, head, body.get("doc", ""), file, kind,
                                         location_of(doc, path, key=True) or Location(file))
    return out


def check_weights(doc: Any, file: str) -> list[Diagnostic]:
    """Located errors in a spec's ``weights`` declaration beyond what the schema checks, and a warning
    for a source name a letter from a library's (``torchvison``, difflib ratio 0.95; ``timmy`` against
    ``timm`` is 0.89 and passes, cutoff 0.9): any name is a valid user source, so the typo would
    otherwise surface only when loading."""
    problems: list[Diagnostic] = []
    if isinstance(doc, Mapping) and doc.get("kind") in _PARTS and doc.get("weights"):
        parse_layouts(doc, file, problems)
        for source in doc["weights"]:
            close = difflib.get_close_matches(str(source), SOURCES, n=1, cutoff=0.9)
            if close and close[0] != source:
                problems.append(Diagnostic(
                    f"weights: source '{source}' is not {close[0]}, so its layouts are read from files "
                    f"and never fetched", location_of(doc, ("weights", source), key=True) or Location(file),
                    severity="warning", hint=f"did you mean '{close[0]}'? A source of your own may have "
                    "any other name"))
    return problems


# --------------------------------------------------------------------------- one model's layouts

#: (source, name) -> Layout, for each spec kind of one model that declares any.
Declared = Mapping[str, Mapping[tuple[str, str], Layout]]


def declared_layouts(documents: Mapping[str, tuple[Any, str]]) -> dict[str, dict[tuple[str, str], Layout]]:
    """``{kind: (document, file)}`` (model, encoder, meta; any may be absent) -> each kind's layouts."""
    out = {}
    for kind, (doc, file) in documents.items():
        if isinstance(doc, Mapping) and doc.get("weights"):
            out[kind] = parse_layouts(doc, file)
    return out


def layout_clashes(declared: Declared) -> list[Diagnostic]:
    """Labels that two specs of one model would both fill, as errors located at the later declaration.

    A model spec's layout maps the whole model, so the encoder or meta declaring the same label would
    leave it unclear which applies. A meta's layout and an encoder layout's ``head`` table of the same
    label would both claim the decoder's keys.
    """
    model, encoder, meta = (declared.get(kind, {}) for kind in ("model", "encoder", "meta"))
    problems = []
    for key, layout in model.items():
        others = [d[key] for d in (encoder, meta) if key in d]
        if others:
            other = others[0]
            problems.append(Diagnostic(
                f"weights: {layout.label} is declared here and by the {other.kind} spec {other.file}"
                f"{f' (line {other.loc.line})' if other.loc and other.loc.line else ''}; a model's layout "
                "maps the whole model, so only one of them can apply", layout.loc,
                hint="give this layout another NAME, or remove one of the two"))
    for key, layout in meta.items():
        enc = encoder.get(key)
        if enc is not None and enc.head is not None and key not in model:
            problems.append(Diagnostic(
                f"weights: {layout.label} is declared here and, with a 'head' table, by the encoder spec "
                f"{enc.file}{f' (line {enc.loc.line})' if enc.loc and enc.loc.line else ''}; both would "
                "claim the decoder's keys", layout.loc,
                hint="move the head's rules into one of the two declarations"))
    return problems


def resolve_layout(source: WeightSource, declared: Declared) -> ModelLayout:
    """The layout ``source`` names for the model whose specs declared ``declared``.

    :class:`WeightSourceError` when no spec declares it (did-you-mean over the declared labels and
    sources) or when two declarations clash (:func:`layout_clashes`).
    """
    key = (source.source, source.name)
    clashes = [d for d in layout_clashes(declared) if d.message.startswith(f"weights: {source.label} ")]
    if clashes:
        raise WeightSourceError(clashes[0].render())
    model = declared.get("model", {})
    if key in model:
        return ModelLayout(source.source, source.name, (model[key],))
    found = tuple(declared[kind][key] for kind in ("meta", "encoder") if key in declared.get(kind, {}))
    if found:
        return ModelLayout(source.source, source.name, found)
    labels = sorted({layout.label for layouts in declared.values() for layout in layouts.values()})
    sources = sorted({label.partition(":")[0] for label in labels})
    files = [f"{kind} spec {next(iter(layouts.values())).file}"
             for kind, layouts in declared.items() if layouts]
    if not files:
        raise WeightSourceError(f"{source.label}: the model's specs declare no weight layouts; declare one "
                                "under 'weights:' in its encoder, meta or model spec (see docs/weights.md)")
    where = f"{', '.join(files)} {'declare' if len(files) > 1 else 'declares'}"
    if source.source not in sources:
        hint = did_you_mean(source.source, sources)
        raise WeightSourceError(f"{source.label}: unknown weight source '{source.source}': {where} layouts "
                                f"of {', '.join(sources)}{f' ({hint})' if hint else ''}; see docs/weights.md")
    close = difflib.get_close_matches(source.label, labels, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise WeightSourceError(f"{source.label}: {where} no such weight layout "
                            f"({hint}declared: {', '.join(labels)}; see docs/weights.md)")


# --------------------------------------------------------------------------- SOURCE:NAME[@PATH]

class WeightSourceError(ValueError):
    """A weight source that cannot be used: bad syntax, unknown source or name, unreadable file."""


@dataclass(frozen=True)
class WeightSource:
    """``torchvision:resnet18`` (fetched when asked) or ``torchvision:resnet18@r18.pth`` (a local file);
    ``mylab:segformer_b0@ckpt.pt`` for a source of the user's own, always a file."""

    source: str
    name: str
    path: str | None = None

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}"

    @property
    def fetchable(self) -> bool:
        """Whether, without ``@PATH``, the weights can be fetched (a :data:`FETCHABLE` library's)."""
        return self.source in FETCHABLE

    def __str__(self) -> str:
        return self.label + (f"@{self.path}" if self.path else "")


_SOURCE_TEXT = re.compile(r"^(?P<source>[A-Za-z][A-Za-z0-9_]{0,31}):(?P<name>[A-Za-z0-9_.-]+)"
                          r"(?:@(?P<path>.+))?$")


def is_source_text(text: str, *, any_source: bool = False) -> bool:
    """Whether ``text`` is written ``SOURCE:NAME[@PATH]`` with a SOURCE of :data:`SOURCES` (else it is
    taken for a file name); ``any_source=True`` accepts a source of any well-formed name."""
    m = _SOURCE_TEXT.match(str(text))
    return bool(m) and (any_source or m.group("source") in SOURCES)


def parse_source(text: str) -> WeightSource:
    """``SOURCE:NAME[@PATH]`` -> :class:`WeightSource`; :class:`WeightSourceError` says what is wrong.

    Any well-formed SOURCE parses: whether a model's specs declare it is for :func:`resolve_layout`
    to say, with a did-you-mean over what they do declare.
    """
    m = _SOURCE_TEXT.match(str(text))
    if not m:
        raise WeightSourceError(f"invalid weight source {text!r}: write SOURCE:NAME or SOURCE:NAME@FILE, "
                                f"e.g. torchvision:resnet18 or mylab:segformer_b0@ckpt.pt")
    return WeightSource(m.group("source"), m.group("name"), m.group("path"))

