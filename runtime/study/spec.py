"""The study file (``kind: study``): which networks, which data and recipe, and what to measure.

A study file is untrusted data like every spec: it loads through ``rtseg_compiler.spec.load`` (safe
YAML, size limits, every value located) and is checked against :data:`SCHEMA`; every problem is a
``FILE:LINE:COL`` diagnostic, all of them collected before anything is built. Example::

    kind: study
    name: camvid_mini
    grid:                                   # metas x encoders x every params list
      encoders: [mobilenet_v1]
      metas: [skipnet, unet]
      params: {width: [0.5, 1.0]}           # routed to the encoder or meta that declares it
      output_stride: [null, 16]
    overrides:                              # per-model settings, by pattern
      - {match: {meta: unet}, params: {final_channels: 32}, train: {lr: 5.0e-4}}
    dataset: {spec: camvid, data: ../shared/data/camvid-mini}
    train: {input: [96, 128], max_iters: 200, batch_size: 4}   # rtsegc train options
    seeds: [1337]
    eval: {split: val}
    bench: {inputs: [[360, 640]], device: cpu, batch: 1, dtype: float32}
    audit: {input: [360, 640], convention: flop}
    budget: {max_gflops: 2.0, max_params: 5.0e+6, max_activation_mib: 400}

``models:`` (a list of zoo names, model files, or ``{encoder, meta}`` pairs) replaces ``grid:``.
Spec references are zoo names or paths relative to the study file, as a model file's ``encoder:``
is relative to the model file. Expansion yields one :class:`Trial` per network and seed; the
network itself is always an encoder file, a meta file and their parameters, which is what a model
file holds too, so a trial can be written back as a plain model file (:meth:`Trial.model_document`).
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from rtseg_compiler.diagnostics import Diagnostic, Location, SpecError, did_you_mean

__all__ = ["RECIPE_OPTIONS", "SCHEMA", "STUDY_OWNED_OPTIONS", "Search", "Study", "Trial",
           "check_study_file", "load_study", "parse_study_text"]

_IDENT = "^[A-Za-z_][A-Za-z0-9_]*$"
_SIZE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}
_VALUE = {"type": ["number", "string", "boolean"]}
_PARAMS = {"type": "object", "propertyNames": {"pattern": _IDENT}, "additionalProperties": _VALUE}
_PARAM_LISTS = {"type": "object", "propertyNames": {"pattern": _IDENT},
                "additionalProperties": {"type": "array", "minItems": 1, "items": _VALUE}}
_REF = {"type": "string", "minLength": 1}
_STRIDE = {"enum": [8, 16, 32, None]}
_POS_INT = {"type": "integer", "minimum": 1}
_NAT = {"type": "integer", "minimum": 0}
_NONNEG = {"type": "number", "minimum": 0}

#: The ``rtsegc train`` options a recipe may set (TrainConfig's fields, ``--max-iters`` as
#: ``max_iters``). The study owns the others (:data:`STUDY_OWNED_OPTIONS`); tests check that the two
#: sets cover TrainConfig exactly, so a new training option is a schema error here until added.
RECIPE_OPTIONS: dict[str, dict[str, Any]] = {
    "input": _SIZE, "pretrained": _REF, "pretrained_prefix": {"type": "string"},
    "train_split": _REF, "val_split": _REF, "limit_train": _NAT, "limit_val": _POS_INT,
    "hflip": {"type": "number", "minimum": 0, "maximum": 1}, "augment": {"type": "string"},
    "skip_bad": {"type": "boolean"}, "external_splits": {"type": "boolean"},
    "weighted_loss": {"type": "boolean"}, "aux_weight": _NONNEG,
    "batch_size": _POS_INT, "max_iters": _POS_INT, "lr": {"type": "number", "exclusiveMinimum": 0},
    "min_lr": _NONNEG, "schedule": {"enum": ["constant", "poly", "cosine"]}, "warmup_iters": _NAT,
    "weight_decay": _NONNEG, "grad_clip": _NONNEG, "eval_interval": _NAT, "eval_batches": _POS_INT,
    "log_interval": _POS_INT, "tensorboard": {"type": "boolean"},
    "progress": {"enum": ["auto", "bar", "lines"]}, "device": _REF, "num_workers": _NAT,
    "channels_last": {"type": "boolean"}, "amp": {"type": "boolean"}, "deterministic": {"type": "boolean"},
}
#: TrainConfig fields a study sets itself: the network and its parameters (models/grid, written into the
#: trial's model file), the data (dataset), where the
#: run goes and whether it resumes (the study folder, ``--resume``), the seed (``seeds:``).
STUDY_OWNED_OPTIONS = ("model", "encoder", "meta", "output_stride", "encoder_params", "meta_params", "data",
                       "dataset", "classes", "out_dir", "resume", "seed")
_RECIPE = {"type": "object", "additionalProperties": False, "properties": RECIPE_OPTIONS}
# A string (a zoo name or path) or a mapping; "type" with both keeps the errors about the mapping's
# fields precise (a oneOf would only say "not valid under any of the given schemas").
_PART = {"type": ["string", "object"], "minLength": 1, "required": ["spec"], "additionalProperties": False,
         "properties": {"spec": _REF, "params": _PARAMS,
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}}
_MODEL_ITEM = {
    "type": ["string", "object"], "minLength": 1, "additionalProperties": False,
    "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}, "model": _REF,
                   "encoder": _REF, "meta": _REF, "params": _PARAMS, "encoder_params": _PARAMS,
                   "meta_params": _PARAMS, "output_stride": _STRIDE, "train": _RECIPE}}
_SPACE_ITEM = {"type": "object", "additionalProperties": False,
               "properties": {"choices": {"type": "array", "minItems": 1, "items": {
                   "type": ["number", "string", "boolean", "null"]}},
                   "low": {"type": "number"}, "high": {"type": "number"},
                   "step": {"type": "number", "exclusiveMinimum": 0}, "log": {"type": "boolean"}}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["kind", "name", "dataset"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "study"},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
        "doc": {"type": "string"},
        "grid": {"type": "object", "required": ["encoders", "metas"], "additionalProperties": False,
                 "properties": {"encoders": {"type": "array", "minItems": 1, "items": _PART},
                                "metas": {"type": "array", "minItems": 1, "items": _PART},
                                "params": _PARAM_LISTS,
                                "output_stride": {"type": "array", "minItems": 1, "items": _STRIDE}}},
        "models": {"type": "array", "minItems": 1, "items": _MODEL_ITEM},
        "overrides": {"type": "array", "items": {
            "type": "object", "required": ["match"], "additionalProperties": False,
            "properties": {"match": {"type": "object", "minProperties": 1, "additionalProperties": False,
                                     "properties": {k: {"type": "string"} for k in
                                                    ("name", "model", "encoder", "meta")}},
                           "params": _PARAMS, "train": _RECIPE}}},
        "dataset": {"type": "object", "required": ["spec"], "additionalProperties": False,
                    "properties": {"spec": _REF, "data": _REF}},
        "train": _RECIPE,
        "seeds": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
        "eval": {"type": "object", "additionalProperties": False,
                 "properties": {"split": _REF, "label_size": {"enum": ["input", "original"]},
                                "batch_size": _POS_INT, "limit": _POS_INT}},
        "bench": {"type": "object", "additionalProperties": False,
                  "properties": {"inputs": {"type": "array", "minItems": 1, "items": _SIZE},
                                 "device": _REF, "batch": _POS_INT,
                                 "dtype": {"enum": ["float32", "bfloat16", "float16"]},
                                 "warmup": _NAT, "iters": _POS_INT, "channels_last": {"type": "boolean"},
                                 "skip": {"type": "boolean"}}},
        "audit": {"type": "object", "additionalProperties": False,
                  "properties": {"input": _SIZE, "convention": {"enum": ["mac", "flop", "tf"]},
                                 "num_classes": _POS_INT}},
        "budget": {"type": "object", "additionalProperties": False, "minProperties": 1,
                   "properties": {"input": _SIZE, "max_gflops": {"type": "number", "exclusiveMinimum": 0},
                                  "max_params": {"type": "number", "exclusiveMinimum": 0},
                                  "max_activation_mib": {"type": "number", "exclusiveMinimum": 0}}},
        "resources": {"type": "object", "additionalProperties": False,
                      "properties": {"cpus": _POS_INT, "gpus": _NAT, "processes": _POS_INT}},
        "out": _REF,
        "search": {"type": "object", "required": ["space", "candidates"], "additionalProperties": False,
                   "properties": {
                       "base": {"type": "object", "additionalProperties": False,
                                "properties": {"model": _REF, "encoder": _REF, "meta": _REF}},
                       "space": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": _IDENT},
                                 "additionalProperties": _SPACE_ITEM},
                       "candidates": _POS_INT, "seed": _NAT, "sampler": {"enum": ["tpe", "random"]},
                       "early_stop": {"type": "object", "additionalProperties": False,
                                      "properties": {"rule": {"enum": ["median", "asha", "none"]},
                                                     "warmup_evals": _NAT, "min_evals": _POS_INT,
                                                     "startup_trials": _NAT,
                                                     "reduction_factor": {"type": "integer",
                                                                          "minimum": 2}}}}},
    },
}


@dataclass(frozen=True)
class Trial:
    """One network and seed of a study: what ``rtsegc train`` gets, and where it was declared."""

    name: str
    encoder: str  # resolved spec paths
    meta: str
    encoder_params: Mapping[str, Any]
    meta_params: Mapping[str, Any]
    output_stride: int | None
    seed: int
    recipe: Mapping[str, Any]  # rtsegc train options (RECIPE_OPTIONS keys)
    encoder_label: str  # table row / column names
    meta_label: str
    variant: str  # "width=0.5, os=16", or "" for the spec's defaults
    declared_at: Location | None = None
    model_label: str | None = None  # the zoo model the trial came from, if any

    def model_document(self, num_classes: int) -> dict[str, Any]:
        """The trial's network as a model file (``kind: model``) with absolute spec paths."""
        doc: dict[str, Any] = {"kind": "model", "name": _identifier(self.name),
                               "encoder": str(Path(self.encoder).resolve()),
                               "meta": str(Path(self.meta).resolve()), "num_classes": num_classes}
        if self.encoder_params:
            doc["encoder_params"] = dict(self.encoder_params)
        if self.meta_params:
            doc["meta_params"] = dict(self.meta_params)
        return doc

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "encoder": self.encoder_label, "meta": self.meta_label,
                "variant": self.variant, "model": self.model_label, "seed": self.seed,
                "encoder_params": dict(self.encoder_params), "meta_params": dict(self.meta_params),
                "output_stride": self.output_stride, "recipe": dict(self.recipe)}


@dataclass(frozen=True)
class Search:
    """The ``search:`` section: a base network, a parameter space and the early-stopping rule."""

    encoder: str
    meta: str
    encoder_params: Mapping[str, Any]
    meta_params: Mapping[str, Any]
    encoder_label: str
    meta_label: str
    space: Mapping[str, Mapping[str, Any]]
    routes: Mapping[str, str]  # parameter -> "encoder", "meta" or "output_stride"
    candidates: int
    seed: int
    sampler: str
    rule: str
    warmup_evals: int
    startup_trials: int
    min_evals: int
    reduction_factor: int


@dataclass(frozen=True)
class Study:
    """A validated study file: its trials (grid or list expanded) and the settings they share."""

    name: str
    source: str
    trials: tuple[Trial, ...]
    dataset: str  # name or resolved path
    num_classes: int
    data: str | None
    eval: Mapping[str, Any]
    bench: Mapping[str, Any]
    audit_input: tuple[int, int] | None
    convention: str
    audit_classes: int  # the class count of the audit's figures (default: the dataset's)
    budget: Mapping[str, Any]
    resources: Mapping[str, int]
    out: str
    search: Search | None = None
    base_recipe: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (1337,)
    text: str = ""
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def budget_input(self) -> tuple[int, int] | None:
        size = self.budget.get("input")
        return tuple(size) if size else self.audit_input


# --------------------------------------------------------------------------- loading


def check_study_file(path: str) -> list[Diagnostic]:
    """``rtsegc validate FILE`` for ``kind: study`` (the rtseg_compiler.spec_kinds entry point)."""
    try:
        load_study(path)
    except SpecError as exc:
        return list(exc.diagnostics)
    return []


def load_study(path: str | Path) -> Study:
    """Read, check and expand a study file; a zoo name (``camvid_mini``) finds ``specs/studies/``."""
    from rtseg_compiler.spec.load import load_spec_file

    path = _resolve_study(str(path))
    load_spec_file(path)  # size, encoding and YAML limits, located, as for every spec
    return parse_study_text(Path(path).read_text(encoding="utf-8"), str(path))


def _resolve_study(ref: str) -> str:
    if Path(ref).exists() or ref.endswith((".yaml", ".yml")):
        return ref
    from rtseg_compiler.zoo import zoo_root

    root = zoo_root()
    candidate = root / "studies" / f"{ref}.yaml" if root is not None else None
    return str(candidate) if candidate is not None and candidate.is_file() else ref


def parse_study_text(text: str, source: str = "<study>") -> Study:
    """Schema-check and expand a study file's text; a SpecError lists every problem, located."""
    from rtseg_compiler.spec.load import load_spec_text
    from rtseg_compiler.spec.schema import check_against_schema

    doc = load_spec_text(text, source)
    diags = check_against_schema(doc, SCHEMA)
    if diags:
        raise SpecError(diags)
    return _Expander(doc, source, text).study()


def _resources(given: Mapping[str, Any]) -> dict[str, int]:
    """CPUs, GPUs and training processes per trial: one process per GPU (DDP) unless given."""
    out = {"cpus": 1, "gpus": 0, **dict(given)}
    out.setdefault("processes", max(1, out["gpus"]))
    return out


def _identifier(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return text if re.match(r"[A-Za-z_]", text) else f"m_{text}"


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Expander:
    """Turns a schema-valid document into trials; collects located diagnostics on the way."""

    def __init__(self, doc: Any, source: str, text: str):
        self.doc, self.source, self.text = doc, source, text
        self.base = Path(source).parent if source and not source.startswith("<") else Path(".")
        self.diags: list[Diagnostic] = []
        self.num_classes = 0
        self._declared: dict[str, set[str]] = {}

    def where(self, *path: Any, key: bool = False) -> Location | None:
        from rtseg_compiler.spec.load import location_of

        return location_of(self.doc, path, key=key) or Location(self.source)

    def error(self, message: str, path: Sequence[Any], hint: str | None = None, key: bool = False) -> None:
        self.diags.append(Diagnostic(message, self.where(*path, key=key), hint=hint))

    # ---- spec references

    def resolve(self, ref: str, kind: str, path: Sequence[Any]) -> str | None:
        """A zoo name or a path relative to the study file; None (and a diagnostic) if neither exists."""
        from rtseg_compiler.zoo import resolve_spec, zoo_hint

        found = resolve_spec(ref, kind)
        if Path(str(found)).is_file() and found != ref:
            return str(found)
        local = self.base / ref
        if local.is_file():
            return str(local)
        if Path(ref).is_file():
            return ref
        self.error(f"no {kind} spec '{ref}' (neither a zoo name nor a file next to the study file)", path,
                   hint=zoo_hint(ref))
        return None

    def declared(self, spec: str) -> set[str]:
        if spec not in self._declared:
            from rtseg_compiler.spec.load import load_spec_file

            try:
                doc = load_spec_file(spec)
                params = doc.get("params") if isinstance(doc, Mapping) else None
                self._declared[spec] = set(params) if isinstance(params, Mapping) else set()
            except SpecError as exc:
                self.diags.extend(exc.diagnostics)
                self._declared[spec] = set()
        return self._declared[spec]

    def route(self, params: Mapping[str, Any], encoder: str, meta: str, path: Sequence[Any],
              enc_params: dict, meta_params: dict) -> bool:
        """Send each parameter to the encoder or meta file that declares it (as create_model does)."""
        ok = True
        enc_names, meta_names = self.declared(encoder), self.declared(meta)
        for name, value in params.items():
            owners = [part for part, names in (("encoder", enc_names), ("meta", meta_names)) if name in names]
            if len(owners) == 2:
                self.error(f"both {Path(encoder).name} and {Path(meta).name} declare parameter '{name}'",
                           (*path, name), key=True, hint="set it through encoder_params or meta_params "
                           "in a models: entry")
                ok = False
            elif not owners:
                known = sorted(enc_names | meta_names)
                self.error(f"'{name}' is not a parameter of {Path(encoder).name} or {Path(meta).name}",
                           (*path, name), key=True,
                           hint=did_you_mean(name, known) or f"they declare: {', '.join(known) or 'none'}")
                ok = False
            else:
                (enc_params if owners[0] == "encoder" else meta_params)[name] = value
        return ok

    def model_file(self, ref: str, path: Sequence[Any]) -> tuple[str, str, dict, dict] | None:
        """(encoder, meta, encoder_params, meta_params) of a model file, spec paths made absolute."""
        from rtseg_compiler.spec.load import load_spec_file

        spec = self.resolve(ref, "model", path)
        if spec is None:
            return None
        try:
            doc = load_spec_file(spec)
        except SpecError as exc:
            self.diags.extend(exc.diagnostics)
            return None
        if not isinstance(doc, Mapping) or doc.get("kind") != "model":
            kind = doc.get("kind") if isinstance(doc, Mapping) else "?"
            self.error(f"'{ref}' is not a model file (kind: {kind})",
                       path, hint="give an encoder and a meta instead")
            return None
        folder = Path(spec).parent
        return (str(folder / doc["encoder"]), str(folder / doc["meta"]),
                dict(doc.get("encoder_params") or {}), dict(doc.get("meta_params") or {}))

    # ---- expansion

    def study(self) -> Study:
        doc = self.doc
        given = [k for k in ("grid", "models", "search") if k in doc]
        if not given:
            self.error("no networks: give a 'grid:' (encoders x metas), a 'models:' list or a 'search:'", ())
        elif len(given) > 1:
            self.error(f"'{given[0]}:' and '{given[1]}:' both given; "
                       "a study has one of grid, models and search",
                       (given[1],), key=True)
        dataset = self.dataset()
        recipe = dict(doc.get("train") or {})
        seeds = tuple(doc.get("seeds") or [1337])
        networks = self.grid() if "grid" in doc else self.models() if "models" in doc else []
        trials = []
        for net in networks:
            for seed in seeds:
                name = net["name"] + (f"_s{seed}" if len(seeds) > 1 else "")
                trials.append(Trial(name=name, seed=seed, recipe=self.recipe_for(net, recipe), **{
                    k: v for k, v in net.items() if k not in ("name", "train", "match")}))
        names = [t.name for t in trials]
        for i, name in enumerate(names):
            if names.index(name) == i and names.count(name) > 1:
                self.error(f"two trials are both named '{name}'", ("models" if "models" in doc else "grid",),
                           hint="give list entries a 'name:'")
        search = self.search() if "search" in doc else None
        for i, _ in enumerate(doc.get("overrides") or []):
            if not any(self.matches(o_net, i) for o_net in networks) and networks:
                self.diags.append(Diagnostic("this override matches no trial",
                                             self.where("overrides", i, "match"), severity="warning"))
        audit = doc.get("audit") or {}
        unique = list(dict.fromkeys(self.diags))  # a bad grid parameter fails once per combination
        if any(d.severity == "error" for d in unique):
            raise SpecError([d for d in unique if d.severity == "error"])
        return Study(
            name=doc["name"], source=self.source, trials=tuple(trials), dataset=dataset,
            num_classes=self.num_classes,
            data=(doc["dataset"].get("data")), eval=dict(doc.get("eval") or {}),
            bench=dict(doc.get("bench") or {}),
            audit_input=tuple(audit["input"]) if "input" in audit else (
                tuple(recipe["input"]) if "input" in recipe else None),
            convention=audit.get("convention", "flop"),
            audit_classes=audit.get("num_classes", self.num_classes), budget=dict(doc.get("budget") or {}),
            resources=_resources(doc.get("resources") or {}),
            out=doc.get("out") or str(Path("studies") / doc["name"]), search=search,
            base_recipe=recipe, seeds=seeds, text=self.text,
            warnings=tuple(d for d in self.diags if d.severity != "error"))

    def dataset(self) -> str:
        """A dataset name (specs/datasets) or a file relative to the study file, checked now."""
        from ..datasets import load_dataset_spec

        ref = self.doc["dataset"]["spec"]
        if ref.endswith((".yaml", ".yml")) and not Path(ref).is_file() and (self.base / ref).is_file():
            ref = str(self.base / ref)
        try:
            self.num_classes = load_dataset_spec(ref).num_classes
        except SpecError as exc:
            for d in exc.diagnostics:  # "no such dataset" comes located at the command line: relocate it
                loc = d.loc if d.loc is not None and d.loc.file != "<command line>" else self.where(
                    "dataset", "spec")
                self.diags.append(Diagnostic(d.message.replace("--dataset ", "dataset "), loc, hint=d.hint))
        return ref

    def part(self, item: Any, kind: str, path: Sequence[Any]) -> tuple[str, dict, str] | None:
        """(spec path, its params, its label in trial names and tables); the label of an entry with
        params names them (``mobilenet_v1_conv_biasTrue``) unless the entry gives a ``name``."""
        ref, params = (item, {}) if isinstance(item, str) else (item["spec"], dict(item.get("params") or {}))
        spec = self.resolve(ref, kind, (*path, "spec") if not isinstance(item, str) else path)
        label = Path(ref).stem + "".join(f"_{k}{_value_text(v)}" for k, v in params.items())
        if not isinstance(item, str) and "name" in item:
            label = item["name"]
        return None if spec is None else (spec, params, label)

    def grid(self) -> list[dict[str, Any]]:
        grid = self.doc["grid"]
        encoders = [self.part(e, "encoder", ("grid", "encoders", i)) for i, e in enumerate(grid["encoders"])]
        metas = [self.part(m, "meta", ("grid", "metas", i)) for i, m in enumerate(grid["metas"])]
        lists = dict(grid.get("params") or {})
        strides = list(grid.get("output_stride") or [None])
        combos = [dict(zip(lists, values)) for values in itertools.product(*lists.values())]
        out = []
        for meta, enc in itertools.product(metas, encoders):
            if meta is None or enc is None:
                continue
            for combo, stride in itertools.product(combos, strides):
                enc_params, meta_params = dict(enc[1]), dict(meta[1])
                if not self.route(combo, enc[0], meta[0], ("grid", "params"), enc_params, meta_params):
                    continue
                bits = [f"{k}={_value_text(v)}" for k, v in combo.items()]
                bits += [f"os={stride}"] if stride is not None else []
                suffix = "".join(f"_{k}{_value_text(v)}" for k, v in combo.items())
                suffix += f"_os{stride}" if stride is not None else ""
                out.append(dict(name=f"{meta[2]}_{enc[2]}{suffix}", encoder=enc[0], meta=meta[0],
                                encoder_params=enc_params, meta_params=meta_params, output_stride=stride,
                                encoder_label=enc[2], meta_label=meta[2], variant=", ".join(bits),
                                declared_at=self.where("grid"), model_label=None, train={}))
        return self.apply_overrides(out)

    def models(self) -> list[dict[str, Any]]:
        out = []
        for i, item in enumerate(self.doc["models"]):
            path = ("models", i)
            entry = {"model": item} if isinstance(item, str) else dict(item)
            if "model" in entry and ("encoder" in entry or "meta" in entry):
                self.error("give 'model' or 'encoder' + 'meta', not both", path)
                continue
            if "model" in entry:
                where = (*path, "model") if not isinstance(item, str) else path
                found = self.model_file(entry["model"], where)
                if found is None:
                    continue
                encoder, meta, enc_params, meta_params = found
                label = Path(entry["model"]).stem
            elif "encoder" in entry and "meta" in entry:
                encoder = self.resolve(entry["encoder"], "encoder", (*path, "encoder"))
                meta = self.resolve(entry["meta"], "meta", (*path, "meta"))
                if encoder is None or meta is None:
                    continue
                enc_params, meta_params, label = {}, {}, None
            else:
                self.error("a models: entry needs 'model', or 'encoder' and 'meta'", path)
                continue
            enc_params.update(entry.get("encoder_params") or {})
            meta_params.update(entry.get("meta_params") or {})
            params = dict(entry.get("params") or {})
            if not self.route(params, encoder, meta, (*path, "params"), enc_params, meta_params):
                continue
            stride = entry.get("output_stride")
            bits = [f"{k}={_value_text(v)}" for k, v in params.items()] + ([f"os={stride}"] if stride else [])
            enc_label, meta_label = Path(encoder).stem, Path(meta).stem
            name = entry.get("name") or (label or f"{meta_label}_{enc_label}") + "".join(
                f"_{k}{_value_text(v)}" for k, v in params.items()) + (f"_os{stride}" if stride else "")
            out.append(dict(name=name, encoder=encoder, meta=meta, encoder_params=enc_params,
                            meta_params=meta_params, output_stride=stride, encoder_label=enc_label,
                            meta_label=meta_label, variant=", ".join(bits), declared_at=self.where(*path),
                            model_label=label, train=dict(entry.get("train") or {})))
        return self.apply_overrides(out)

    def matches(self, net: Mapping[str, Any], index: int) -> bool:
        match = self.doc["overrides"][index]["match"]
        fields = {"name": net["name"], "model": net.get("model_label") or "", "encoder": net["encoder_label"],
                  "meta": net["meta_label"]}
        return all(fnmatch.fnmatchcase(fields[k], pattern) for k, pattern in match.items())

    def apply_overrides(self, nets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Overrides apply in file order; a list entry's own ``train:`` wins over all of them."""
        for net in nets:
            own_train, merged_train = net["train"], {}
            for i, override in enumerate(self.doc.get("overrides") or []):
                if not self.matches(net, i):
                    continue
                params = dict(override.get("params") or {})
                enc_params, meta_params = dict(net["encoder_params"]), dict(net["meta_params"])
                if self.route(params, net["encoder"], net["meta"], ("overrides", i, "params"),
                              enc_params, meta_params):
                    net["encoder_params"], net["meta_params"] = enc_params, meta_params
                    shown = [f"{k}={_value_text(v)}" for k, v in params.items()]
                    net["variant"] = ", ".join(filter(None, [net["variant"], *shown]))
                merged_train.update(override.get("train") or {})
            net["train"] = {**merged_train, **own_train}
        return nets

    def recipe_for(self, net: Mapping[str, Any], recipe: Mapping[str, Any]) -> dict[str, Any]:
        return {**recipe, **net["train"]}

    def search(self) -> Search:
        section = self.doc["search"]
        base = dict(section.get("base") or {})
        path = ("search", "base")
        if "model" in base:
            found = self.model_file(base["model"], (*path, "model"))
            encoder, meta, enc_params, meta_params = found if found else ("", "", {}, {})
        elif "encoder" in base and "meta" in base:
            encoder = self.resolve(base["encoder"], "encoder", (*path, "encoder")) or ""
            meta = self.resolve(base["meta"], "meta", (*path, "meta")) or ""
            enc_params, meta_params = {}, {}
        else:
            self.error("search needs a base network: 'model', or 'encoder' and 'meta'", path)
            encoder = meta = ""
            enc_params, meta_params = {}, {}
        routes: dict[str, str] = {}
        for name, dim in section["space"].items():
            where = ("search", "space", name)
            if "choices" not in dim and not ("low" in dim and "high" in dim):
                self.error(f"search space '{name}' needs 'choices', or 'low' and 'high'", where)
            elif "low" in dim and dim["low"] > dim["high"]:
                self.error(f"search space '{name}': low {dim['low']} is above high {dim['high']}", where)
            if name == "output_stride":
                routes[name] = "output_stride"
                for j, c in enumerate(dim.get("choices") or []):
                    if c not in (8, 16, 32, None):
                        self.error(f"output_stride {c} is not 8, 16, 32 or null", (*where, "choices", j))
                continue
            if encoder and meta:
                enc_probe, meta_probe = {}, {}
                if self.route({name: 0}, encoder, meta, ("search", "space"), enc_probe, meta_probe):
                    routes[name] = "encoder" if enc_probe else "meta"
        early = dict(section.get("early_stop") or {})
        return Search(encoder=encoder, meta=meta, encoder_params=enc_params, meta_params=meta_params,
                      encoder_label=Path(encoder).stem, meta_label=Path(meta).stem,
                      space={k: dict(v) for k, v in section["space"].items()}, routes=routes,
                      candidates=section["candidates"], seed=section.get("seed", 0),
                      sampler=section.get("sampler", "tpe"), rule=early.get("rule", "median"),
                      warmup_evals=early.get("warmup_evals", 1),
                      startup_trials=early.get("startup_trials", 2), min_evals=early.get("min_evals", 1),
                      reduction_factor=early.get("reduction_factor", 3))


