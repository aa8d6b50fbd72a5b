"""Sub-commands that other distributions add to ``rtsegc`` through the ``rtseg_compiler.commands`` group.

Why entry points: ``rtsegc train``/``eval``/``predict``/``bench`` need torch, datasets and a training
loop, which belong to the runtime (the ``rtseg_runtime`` package), not to the compiler. If the compiler's
CLI imported the runtime, the two packages would depend on each other (the runtime already imports the
compiler to build networks). With an entry-point group the dependency runs one way: the runtime declares

    [project.entry-points."rtseg_compiler.commands"]
    train = "rtseg_runtime.commands:TRAIN"

and ``rtsegc`` lists whatever is installed. Loading an entry point imports only the object it names; the
runtime keeps that module free of torch, so ``rtsegc validate`` and ``rtsegc --help`` stay fast and
torch-free.

A command object needs two attributes: ``help`` (one line for ``rtsegc --help``) and
``main(argv, prog) -> int`` (parses its own options; exit status 0, or 2 for bad input). A broken entry
point, an object without those attributes or a name that clashes with a built-in command is one warning
line, never a traceback.

The group is scanned only when the command line may need it: ``rtsegc --help``, or a command that is
not built in. ``rtsegc flops`` and the other built-in commands skip the scan, which imports
``importlib.metadata`` and reads every installed distribution: 80-150 ms on the loaded 2-core CI
machine, where a whole ``rtsegc flops`` now takes 0.3-0.4 s. So the warnings above appear there, not
on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

__all__ = ["ENTRY_POINT_GROUP", "RUNTIME_COMMANDS", "PluginCommand", "discover_commands"]

ENTRY_POINT_GROUP = "rtseg_compiler.commands"
#: What the runtime provides; only their names are known here, to explain an uninstalled runtime.
RUNTIME_COMMANDS = ("train", "eval", "predict", "bench", "study")


@dataclass(frozen=True)
class PluginCommand:
    """A sub-command found through an entry point; ``origin`` names the distribution that declared it."""

    name: str
    help: str
    main: Callable[[Sequence[str], str], int]
    origin: str


def _installed() -> Iterable[Any]:
    from importlib import metadata

    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _origin(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    try:
        return f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unknown distribution"
    except Exception:  # noqa: BLE001 - broken metadata must not break the CLI
        return "an unknown distribution"


def discover_commands(reserved: Iterable[str] = (), *, entry_points: Iterable[Any] | None = None,
                      warn: Callable[[str], None] | None = None) -> dict[str, PluginCommand]:
    """The installed plugin commands by name, sorted; problems go to ``warn`` (one line each).

    ``reserved`` holds the built-in command names, which a plugin cannot replace. ``entry_points``
    replaces the installed ones (tests inject a list; anything with ``name``, ``value`` and ``load()``).
    """
    warn = warn or (lambda message: None)
    reserved = set(reserved)
    found: dict[str, PluginCommand] = {}
    values: dict[str, str] = {}
    eps = _installed() if entry_points is None else entry_points
    for ep in sorted(eps, key=lambda e: (e.name, e.value)):
        origin = _origin(ep)
        label = f"command '{ep.name}' ({ep.value}) of {origin}"
        if ep.name in reserved:
            warn(f"{label}: '{ep.name}' is a built-in rtsegc command; the plugin is ignored")
            continue
        if ep.name in values:  # two distributions, or one seen twice on sys.path: the first one wins
            if values[ep.name] != ep.value:
                warn(f"{label}: '{ep.name}' is already provided by {values[ep.name]}; ignored")
            continue
        values[ep.name] = ep.value
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is a warning, not a crash
            warn(f"{label} cannot be loaded: {type(exc).__name__}: {exc}")
            continue
        help_text, main = getattr(obj, "help", None), getattr(obj, "main", None)
        if not isinstance(help_text, str) or not callable(main):
            warn(f"{label}: the object needs a 'help' string and a 'main(argv, prog)' function")
            continue
        found[ep.name] = PluginCommand(ep.name, help_text, main, origin)
    return found
