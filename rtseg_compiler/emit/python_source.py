"""Emit a standalone, readable PyTorch source file for a resolved graph (``rtsegc compile --save-code``).

The file needs torch alone. It holds one ``nn.Module`` class whose ``__init__`` builds every layer
at the path the compiled module uses (``self.encoder.ds3.pw``), so the two have the same state-dict
keys and ``load_state_dict(compiled.state_dict(), strict=True)`` just works. Containers are plain
``nn.Module()`` objects, or ``nn.ModuleDict()`` where a child's name is not a Python identifier
(repeat items such as ``ds7_11.1``). ``forward`` reads like hand-written code: a chain reuses its
variable (``x = self.encoder.conv1(x)``), only maps read later keep a name of their own, and each
line ends with the layer's name, op and output shape at the compile-time input size.

Layers come from the same op ``build`` hooks as the fx module, so the two cannot drift: a module is
written as its constructor call (arguments read back from the built module through its signature,
defaults left out), a stateless call (crop, shuffle, unpool ...) as a copy of the op's own helper
function, and ops that declare a ``source_expression`` (add, mul, concat) inline as ``a + b`` /
``torch.cat([a, b], dim=1)``. A user op's own module class or function is copied into the file with
what it needs from its plugin (:mod:`.embed`, which says why the file embeds rather than imports).
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import sys
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from ..ir import INPUT, Resolved
from ..ops import REGISTRY, FunctionCall, op_origin
from ..ops.base import BUILTIN
from .embed import ALLOWED_MODULES, Embedding, SourceEmitError, allowed_import, plugin_home
from .torch_module import build_layer

__all__ = ["emit_python", "SourceEmitError"]

#: Arguments of torch modules written as one int when all items agree (``kernel_size=3``).
_PAIR_ARGS = {"kernel_size", "stride", "padding", "dilation", "output_padding"}
#: Modules the generated file may import (the helpers of the op files use these only).
_ALLOWED_MODULES = ALLOWED_MODULES
_COMMENT_COLUMN = 56


@dataclass(frozen=True)
class _UserOp:
    """A layer of a user op: its code may be copied from ``home``, the plugin's package."""

    op: str
    home: str
    embedding: Embedding


# --------------------------------------------------------------------------- module constructors

def _literal(value: Any, what: str) -> str:
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = [_literal(v, what) for v in value]
        if isinstance(value, tuple):
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
        return f"[{', '.join(items)}]"
    raise SourceEmitError(f"{what}: cannot write {type(value).__name__} {value!r} as Python source")


def _compact(name: str, value: Any) -> Any:
    if name in _PAIR_ARGS and isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return value[0]
    return value


def _copyable(cls: type) -> bool:
    """A built-in op's own module class that depends on torch alone (``ops/modules.py``)."""
    return cls.__module__.startswith("rtseg_compiler.") and cls.__dict__.get("standalone_source") is True


def _user_class(cls: type, user: _UserOp | None) -> bool:
    """A module class of the user op's own plugin package, to be copied into the file."""
    return user is not None and cls.__module__.split(".")[0] == user.home


def module_source(module: nn.Module, where: str = "", classes: dict[str, type] | None = None,
                  user: _UserOp | None = None) -> str:
    """The constructor call that builds ``module`` again: ``nn.Conv2d(3, 32, 3, stride=2, bias=False)``.

    A built-in op's own class (``standalone_source = True``, e.g. the channel layer norm) is
    written by its name and added to ``classes``, whose sources the file then includes. A class of
    a user op's plugin (``user``) is copied into ``user.embedding``; its call is checked by building
    the module again from the arguments read back (:func:`_check_rebuilt`).
    """
    cls = type(module)
    if cls is nn.Sequential:
        return f"nn.Sequential({', '.join(module_source(m, where, classes, user) for m in module)})"
    copied = _copyable(cls) and classes is not None
    plugin = not copied and _user_class(cls, user)
    if copied:
        classes[cls.__name__] = cls
    elif plugin:
        user.embedding.add(cls, op=user.op, where=where, home=user.home)
    elif not cls.__module__.startswith("torch.nn") or getattr(nn, cls.__name__, None) is not cls:
        owner = f" (op '{user.op}', whose code may be copied from its package '{user.home}')" if user else ""
        raise SourceEmitError(f"layer '{where}'{owner}: {cls.__module__}.{cls.__name__} is not a torch.nn "
                              "module, so a file depending on torch alone cannot build it")
    args, positional, keywords = [], [], {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        if not hasattr(module, p.name):
            if p.default is p.empty or plugin:
                raise SourceEmitError(
                    f"layer '{where}': cannot read argument '{p.name}' of {cls.__name__}"
                    + (f" (op '{user.op}'): keep each __init__ argument as an attribute of the same "
                       f"name (self.{p.name} = {p.name}) so that --save-code can write the call"
                       if plugin else ""))
            continue  # not stored on the module: only its initial values depend on it (PReLU's init)
        value = getattr(module, p.name)
        if isinstance(value, torch.Tensor) or (value is None and isinstance(p.default, bool)):
            value = value is not None  # bias=True stores a Parameter, bias=False stores None
        value = _compact(p.name, value)
        if p.default is p.empty:
            args.append(_literal(value, where))
            positional.append(value)
        elif _compact(p.name, p.default) != value or type(p.default) is not type(value):
            if p.default is None and value is None:
                continue
            args.append(f"{p.name}={_literal(value, where)}")
            keywords[p.name] = value
    if plugin:
        _check_rebuilt(module, cls, positional, keywords, where, user.op)
    return f"{'' if copied or plugin else 'nn.'}{cls.__name__}({', '.join(args)})"


def _check_rebuilt(module: nn.Module, cls: type, positional: list[Any], keywords: dict[str, Any],
                   where: str, op: str) -> None:
    """Build ``cls`` again from the arguments read back and compare it with ``module``.

    Reading arguments back from attributes trusts that ``self.kernel`` is the ``kernel`` argument.
    A plugin class may store a derived value under that name instead, or not at all, and then the
    file would build another layer. The two must have the same submodule types, the same parameter
    and buffer shapes, and equal buffers (a blur filter, a fixed kernel); weights are initial values
    and are overwritten by the state dict anyway. The global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        try:
            rebuilt = cls(*positional, **keywords)
        except Exception as exc:  # noqa: BLE001 - whatever the plugin raises, say where
            raise SourceEmitError(f"layer '{where}' (op '{op}'): {cls.__name__}(...) with the arguments read "
                                  f"back from the module fails ({type(exc).__name__}: {exc})") from None

    def shape(m: nn.Module) -> tuple:
        return (tuple(type(sub).__name__ for sub in m.modules()),
                tuple((name, tuple(t.shape)) for name, t in m.named_parameters()),
                tuple((name, tuple(t.shape)) for name, t in m.named_buffers()))

    same = shape(rebuilt) == shape(module) and all(
        torch.equal(a, b) for (_, a), (_, b) in zip(rebuilt.named_buffers(), module.named_buffers()))
    if not same:
        raise SourceEmitError(f"layer '{where}' (op '{op}'): {cls.__name__} built again from the attributes "
                              "named like its __init__ arguments differs from the built layer (its buffers "
                              "or shapes); keep each argument as an attribute of the same name, unchanged")


# --------------------------------------------------------------------------- helper functions

def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _helper(fn: Any, where: str) -> tuple[str, list[str]]:
    """The source of an op's helper function and the import lines it needs."""
    imports = []
    for name in sorted(_code_names(fn.__code__)):
        if name not in fn.__globals__ or hasattr(builtins, name):
            continue
        value = fn.__globals__[name]
        if isinstance(value, types.ModuleType) and value.__name__.split(".")[0] in _ALLOWED_MODULES:
            imports.append(f"import {value.__name__}" if value.__name__ == name
                           else f"import {value.__name__} as {name}")
        elif any(getattr(sys.modules.get(m), name, None) is value for m in _ALLOWED_MODULES):
            # functools.reduce reports its module as '_functools': find the public one.
            home = next(m for m in _ALLOWED_MODULES if getattr(sys.modules.get(m), name, None) is value)
            imports.append(f"from {home} import {name}")
        elif name == "Any":
            imports.append("from typing import Any")
        else:
            raise SourceEmitError(f"layer '{where}': {fn.__module__}.{fn.__name__} uses '{name}', which a "
                                  "file depending on torch alone cannot import")
    return textwrap.dedent(inspect.getsource(fn)), imports


def _class_helper(cls: type, where: str) -> tuple[str, list[str]]:
    """The source of a copyable module class and the import lines its methods need."""
    imports: list[str] = []
    for value in vars(cls).values():
        if isinstance(value, types.FunctionType):
            # 'from torch import nn' heads every generated file already.
            imports += [line for line in _helper(value, where)[1] if line != "import torch.nn as nn"]
    return textwrap.dedent(inspect.getsource(cls)), imports


def _user_function(fn: Any, where: str, user: _UserOp, imports: set[str]) -> str:
    """The name a user op's ``FunctionCall`` function has in the file: imported when torch, math ...
    export it under that name, else copied from the plugin (with what it needs)."""
    line = allowed_import(getattr(fn, "__name__", ""), fn)
    if line is not None:
        imports.add(line)
        return fn.__name__
    module = str(getattr(fn, "__module__", "") or "")
    if not isinstance(fn, types.FunctionType) or module.split(".")[0] != user.home:
        raise SourceEmitError(f"layer '{where}' (op '{user.op}'): its FunctionCall runs {module}."
                              f"{getattr(fn, '__qualname__', fn)!s}, which the saved file can neither copy "
                              f"(only functions of the plugin package '{user.home}') nor import (only "
                              f"{', '.join(ALLOWED_MODULES)})")
    return user.embedding.add(fn, op=user.op, where=where, home=user.home)


# --------------------------------------------------------------------------- names

class _Names:
    def __init__(self, reserved: Iterable[str]) -> None:
        self.taken = set(reserved) | set(keyword.kwlist) | set(dir(builtins))

    def new(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in hint).strip("_") or "v"
        base = f"v_{base}" if base[0].isdigit() else base
        name, n = base, 2
        while name in self.taken:
            name, n = f"{base}_{n}", n + 1
        self.taken.add(name)
        return name


_MODULE_ATTRS = set(dir(nn.Module()))
_DICT_ATTRS = set(dir(nn.ModuleDict()))


def _attribute_ok(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name not in _MODULE_ATTRS


# --------------------------------------------------------------------------- the file

def emit_python(resolved: Resolved, class_name: str = "CompiledNet", *, origin: str = "") -> str:
    """The text of a standalone ``.py`` file defining ``class_name`` for ``resolved.graph``."""
    graph = resolved.graph
    built = {n.name: build_layer(resolved, n.name) for n in graph.nodes}

    # ---- containers: every dotted prefix of a module layer's name, in order of first appearance
    children: dict[str, list[str]] = {"": []}
    for node in graph.nodes:
        if not isinstance(built[node.name], nn.Module):
            continue
        parts = node.name.split(".")
        for depth in range(len(parts)):
            parent, path = ".".join(parts[:depth]), ".".join(parts[:depth + 1])
            if path not in children.setdefault(parent, []):
                children[parent].append(path)
            if depth < len(parts) - 1:
                children.setdefault(path, [])
    as_dict = {}
    for path, kids in children.items():
        names = [k.rsplit(".", 1)[-1] for k in kids]
        plain = all(_attribute_ok(n) for n in names)
        if not plain and (not path or any(n in _DICT_ATTRS for n in names)):
            raise SourceEmitError(f"cannot write the layers under '{path or 'the top level'}' as attributes "
                                  f"or a ModuleDict: {', '.join(names)}")
        as_dict[path] = not plain

    def access(path: str) -> str:
        text, parent = "self", ""
        for part in path.split("."):
            text += f"[{part!r}]" if as_dict.get(parent) else f".{part}"
            parent = f"{parent}.{part}" if parent else part
        return text

    init: list[str] = []
    helpers: dict[str, str] = {}
    classes: dict[str, type] = {}
    imports = {"import torch", "from torch import nn"}
    embedding = Embedding({class_name})

    def user_op(layer: str) -> _UserOp | None:
        op = graph.node(layer).op
        if op_origin(op) == BUILTIN:
            return None
        return _UserOp(op, plugin_home(REGISTRY[op].build), embedding)

    def build(path: str) -> None:
        for child in children.get(path, []):
            if child in children and not isinstance(built.get(child), nn.Module):
                kind = "nn.ModuleDict()" if as_dict[child] else "nn.Module()"
                init.append(f"{access(child)} = {kind}")
                build(child)
            else:
                call = module_source(built[child], child, classes, user_op(child))
                init.append(f"{access(child)} = {call}")

    build("")
    for name, cls in classes.items():
        helpers[name], needed = _class_helper(cls, name)
        imports.update(needed)
    # A user op's function is copied before the variables are named, so that no variable takes its name.
    user_calls: dict[str, str] = {}
    for node in graph.nodes:
        item, op, user = built[node.name], REGISTRY[node.op], user_op(node.name)
        dummies = [f"_{k}" for k in range(len(node.inputs))]
        if isinstance(item, FunctionCall) and user is not None and not (
                op.source_expression and op.source_expression(node.attrs, dummies) is not None):
            user_calls[node.name] = _user_function(item.fn, node.name, user, imports)

    # ---- forward
    uses: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        op = REGISTRY[node.op]
        for pos, src in enumerate(node.inputs):
            key = f"{src}#extra" if pos in op.extra_inputs else src
            uses[key] = uses.get(key, 0) + 1
            last_use[key] = i
    for _, node_name in graph.outputs or (("", graph.output),):
        last_use[node_name] = len(graph.nodes)

    # A node continues its first input's variable when it is that value's last reader (a chain
    # conv -> bn -> relu reads x = ...(x)); each chain is named once, after the tap it ends at, or
    # its last layer, so the maps a decoder reads later are called stride8, stride16 ... A chain
    # ends where the encoder hands over to the head, which starts variables of its own.
    def first_input(node: Any) -> str | None:
        op = REGISTRY[node.op]
        return node.inputs[0] if node.inputs and 0 not in op.extra_inputs else None

    root: dict[str, str] = {INPUT: INPUT}
    members: dict[str, list[str]] = {INPUT: []}
    for i, node in enumerate(graph.nodes):
        first = first_input(node)
        same_part = first == INPUT or (first is not None and graph.node(first).part == node.part)
        if first is not None and last_use.get(first) == i and same_part:
            root[node.name] = root[first]
        else:
            root[node.name] = node.name
            members[node.name] = []
        members[root[node.name]].append(node.name)
    tap_of = {t.node: t.name for t in graph.taps}
    names = _Names(["self", "x", "torch", "nn", "F", "math", "operator", "functools", *classes,
                    *embedding.names, *user_calls.values()])
    chain_var = {INPUT: "x"}
    for start, chain in members.items():
        if start == INPUT:
            continue
        taps = [tap_of[m] for m in chain if m in tap_of]
        last = chain[-1]
        short = last.split(".", 1)[1] if last.startswith(("encoder.", "head.")) else last
        chain_var[start] = names.new(taps[-1] if taps else short)

    var: dict[str, str] = {INPUT: "x"}
    lines: list[tuple[str, str]] = []
    for i, node in enumerate(graph.nodes):
        op = REGISTRY[node.op]
        args, dying = [], []
        for pos, src in enumerate(node.inputs):
            key = f"{src}#extra" if pos in op.extra_inputs else src
            args.append(var[key])
            if last_use.get(key) == i and var[key] not in dying:
                dying.append(var[key])
        item = built[node.name]
        if isinstance(item, nn.Module):
            call = f"{access(node.name)}({', '.join(args)})"
        elif isinstance(item, FunctionCall):
            inline = op.source_expression(node.attrs, args) if op.source_expression else None
            if inline is not None:
                call = inline
            elif node.name in user_calls:
                kwargs = [f"{k}={_literal(v, node.name)}" for k, v in item.kwargs.items()]
                call = f"{user_calls[node.name]}({', '.join(args + kwargs)})"
            else:
                if item.fn.__name__ not in helpers:
                    helpers[item.fn.__name__], needed = _helper(item.fn, node.name)
                    imports.update(needed)
                    names.taken.add(item.fn.__name__)
                kwargs = [f"{k}={_literal(v, node.name)}" for k, v in item.kwargs.items()]
                call = f"{item.fn.__name__}({', '.join(args + kwargs)})"
        else:  # pragma: no cover - an op's build hook returned something else
            raise SourceEmitError(f"layer '{node.name}': op {node.op} built {type(item).__name__}")
        out = chain_var[root[node.name]]
        if out in dying:
            dying.remove(out)
        target = out
        if op.returns_extra(node.attrs):
            extra = names.new(f"{out}_indices") if uses.get(f"{node.name}#extra") else "_"
            var[f"{node.name}#extra"] = extra
            target = f"{out}, {extra}"
        var[node.name] = out
        t = resolved.types[node.name]
        lines.append((f"{target} = {call}", f"{node.name}: {node.op} -> {t}"))
        if dying:
            lines.append((f"del {', '.join(dying)}", ""))
    if graph.outputs:  # several outputs: a dict in declared order, the main one first (as emit_torch)
        items = ", ".join(f"{name!r}: {var[node]}" for name, node in graph.outputs)
        lines.append((f"return {{{items}}}", ", ".join(f"{name}: {resolved.types[node]}"
                                                        for name, node in graph.outputs)))
    else:
        lines.append((f"return {var[graph.output]}", f"{graph.output}: {resolved.output}"))

    # ---- assemble
    clash = sorted(embedding.names & (set(helpers) | set(classes)))
    if clash:
        raise SourceEmitError(f"a user op's code copied into the file defines '{clash[0]}', which a built-in "
                              "op's helper of the same file defines too; rename it in the plugin")
    imports |= embedding.imports
    copied = sorted(embedding.definitions)
    image, out = resolved.input, resolved.output
    params = sum(p.numel() for m in built.values() if isinstance(m, nn.Module) for p in m.parameters())
    head = [
        f'"""{class_name}: {graph.name}, written by rtsegc --save-code.',
        "",
        *([f"Spec: {origin}"] if origin else []),
        f"Depends on torch alone. Input N x {image.channels} x H x W; at {image.height}x{image.width} the "
        f"output is N x {out}",
        f"({params:,} parameters). Shapes in the comments are C x H x W at that size. State-dict keys",
        "equal those of rtseg_compiler.compile_model(...).module, so its weights load with strict=True.",
        *([f"Copied from user op plugins: {', '.join(copied)}."] if copied else []),
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    if any("Any" in text for text in helpers.values()):
        imports.add("from typing import Any")
    stdlib = sorted(i for i in imports if not i.split()[1].startswith("torch"))
    torch_imports = sorted((i for i in imports if i.split()[1].startswith("torch")),
                           key=lambda i: (not i.startswith("import"), i))
    head += stdlib + ([""] if stdlib else []) + torch_imports + ["", ""]
    head += embedding.text()
    for text in helpers.values():
        head += text.rstrip().splitlines() + ["", ""]
    body = [f"class {class_name}(nn.Module):",
            f'    """{graph.name}: {len(graph.nodes)} layers; built from the spec\'s names and nesting."""',
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()"]
    body += [f"        {line}" for line in init]
    body += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
             f"        # input: {image}"]
    width = min(_COMMENT_COLUMN, max(len(code) for code, _ in lines))
    for code, comment in lines:
        body.append(f"        {code.ljust(width)}  # {comment}" if comment else f"        {code}")
    return "\n".join(head + body) + "\n"
