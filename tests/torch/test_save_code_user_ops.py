"""``rtsegc compile --save-code`` for user ops: the saved file embeds the plugin's code.

Two plugins: the example package's ``blur_pool`` (a module class of the plugin, ``BlurPool2d``, whose
constructor reads a helper function, ``binomial``) and a function-built op written here,
``soft_gate`` (a ``FunctionCall`` of a plugin function that calls another plugin function and reads a
plugin constant). For each, the saved file runs in a fresh interpreter in which ``rtseg_compiler``
and the plugin cannot be imported, loads the compiled module's state dict strictly, and must return
exactly the compiled module's output. A plugin whose source cannot be read is a one-line error.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest
import torch

from conftest import EXAMPLE_OPS
from rtseg_compiler import compile_model
from rtseg_compiler.build import class_name_of, standalone_source
from rtseg_compiler.cli import main as rtsegc
from rtseg_compiler.emit.python_source import SourceEmitError
from rtseg_compiler.ops import REGISTRY, plugins, unregister

FUNCTION_PLUGIN = '''\
"""A user op built as a plain function call, for the --save-code tests."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from rtseg_compiler.ops import NUMBER, Field, FunctionCall, OpDef, register, unaffected

SHIFTS = (0.25, -0.5)


def _shifted(x: torch.Tensor, index: int) -> torch.Tensor:
    return x + SHIFTS[index]


def soft_gate(x: torch.Tensor, gate: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return _shifted(torch.tanh(x * scale), 0) * torch.sigmoid(_shifted(gate, 1))


def _infer(attrs: Mapping[str, Any], ins: Sequence[Any]) -> Any:
    return ins[0]


def _build(attrs: Mapping[str, Any], ins: Sequence[Any], out: Any) -> Any:
    return FunctionCall(soft_gate, {"scale": attrs["scale"]})


register(OpDef(name="soft_gate", summary="tanh(x * scale) gated by sigmoid(gate)",
               fields={"scale": Field(NUMBER, 1.0)}, arity=(2, 2), infer=_infer, build=_build,
               dilate=unaffected))
'''

GATED = """\
kind: encoder
name: gated
input: [24, 40]
layers:
  - {name: a, op: conv, out: 8, kernel: 3, stride: 2}
  - {name: b, op: conv, input: a, out: 8, kernel: 1}
  - {name: g, op: soft_gate, inputs: [a, b], scale: 0.5}
taps: {stride2: g}
"""

#: Run in a fresh interpreter: block rtseg_compiler and the plugins, build the saved class, compare.
PROBE = """\
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rtseg_compiler", "rtsegc_example_ops", "uo_function_ops"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
import torch, net
torch.set_num_threads(1)  # as the test process (one_torch_thread): the same summation order
m = getattr(net, sys.argv[2])()
m.load_state_dict(torch.load("w.pt", weights_only=True), strict=True)
with torch.no_grad():
    got = m.eval()(torch.load("x.pt"))
want = torch.load("y.pt")
assert torch.equal(got, want), (got - want).abs().max().item()
print("ok")
"""


@pytest.fixture
def registered(tmp_path: Path) -> Iterator[Path]:
    """The example package and the function plugin importable and registered; both removed after."""
    (tmp_path / "uo_function_ops.py").write_text(FUNCTION_PLUGIN)
    before = set(REGISTRY)
    sys.path[:0] = [str(EXAMPLE_OPS), str(tmp_path)]
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(EXAMPLE_OPS))
        sys.path.remove(str(tmp_path))
        for name in set(REGISTRY) - before:
            unregister(name)
        for name in [m for m in sys.modules if m.startswith(("rtsegc_example_ops", "uo_function_ops"))]:
            del sys.modules[name]
        plugins._reset_for_tests()


def _saved_file_computes_the_same(tmp_path: Path, capsys, plugin: str, spec: Path, size: str) -> str:
    target = tmp_path / "net.py"
    argv = ["--ops", plugin, "compile", str(spec), "--input", size, "--save-code", str(target)]
    assert rtsegc(argv) == 0, capsys.readouterr().err
    assert "written to" in capsys.readouterr().out
    h, w = map(int, size.split("x"))
    compiled = compile_model(spec, (h, w))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in compiled.module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.save(compiled.module.state_dict(), tmp_path / "w.pt")
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(compiled.module.eval()(x), tmp_path / "y.pt")
    class_name = class_name_of(compiled.graph.name)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), class_name], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    return target.read_text()


def test_module_built_user_op_is_embedded(registered, capsys, one_torch_thread):
    source = _saved_file_computes_the_same(registered, capsys, "rtsegc_example_ops",
                                           EXAMPLE_OPS / "specs" / "blurnet_subpixel.yaml", "48x80")
    assert "class BlurPool2d(nn.Module):" in source and "def binomial(k: int)" in source
    assert "self.encoder.s2.down = BlurPool2d(16)" in source
    assert "rtseg_compiler" not in source.split('"""', 2)[2] and "rtsegc_example_ops" not in source
    assert "Copied from user op plugins: BlurPool2d, binomial." in source


def test_function_built_user_op_is_embedded(registered, capsys, one_torch_thread):
    spec = registered / "gated.yaml"
    spec.write_text(GATED)
    source = _saved_file_computes_the_same(registered, capsys, "uo_function_ops", spec, "24x40")
    assert "SHIFTS = (0.25, -0.5)" in source
    assert source.index("def _shifted(") < source.index("def soft_gate(")
    forward = source.split("def forward", 1)[1]
    assert "soft_gate(" in forward and "scale=0.5)" in forward  # inputs positionally, then the kwargs
    assert "uo_function_ops" not in source and "register(" not in source


def test_a_plugin_class_whose_arguments_cannot_be_read_back_is_refused(registered):
    """BlurPool2d that does not keep 'kernel' under that name: the call cannot be written, and saying so
    beats a file that silently builds the default 3x3 blur."""
    import rtsegc_example_ops  # noqa: F401
    from rtsegc_example_ops.modules import BlurPool2d

    compiled = compile_model(EXAMPLE_OPS / "specs" / "blurnet_subpixel.yaml", (48, 80))
    layer = compiled.module.get_submodule("encoder.s2.down")
    assert isinstance(layer, BlurPool2d)
    del layer.kernel
    with pytest.raises(SourceEmitError, match=r"cannot read argument 'kernel' of BlurPool2d "
                                              r"\(op 'blur_pool'\): keep each __init__ argument"):
        from rtseg_compiler.emit.python_source import Embedding, _UserOp, module_source

        module_source(layer, "encoder.s2.down", {}, _UserOp("blur_pool", "rtsegc_example_ops", Embedding()))
    layer.kernel = 5  # read back wrong: the rebuilt blur has a 5x5 filter, not the layer's 3x3
    with pytest.raises(SourceEmitError, match="differs from the built layer"):
        module_source(layer, "encoder.s2.down", {}, _UserOp("blur_pool", "rtsegc_example_ops", Embedding()))


def test_a_plugin_without_source_is_a_clear_error(tmp_path, capsys):
    """An op registered from an interactive session: its function has no file to copy from."""
    from rtseg_compiler.ops import FunctionCall, OpDef, register, unaffected

    namespace: dict = {"__name__": "__main__", "FunctionCall": FunctionCall}
    exec(compile(textwrap.dedent("""
        def repl_double(x):
            return x * 2

        def build(attrs, ins, out):
            return FunctionCall(repl_double)
    """), "<stdin>", "exec"), namespace)
    register(OpDef(name="repl_double", summary="x * 2", fields={}, infer=lambda attrs, ins: ins[0],
                   build=namespace["build"], dilate=unaffected))
    try:
        spec = tmp_path / "enc.yaml"
        spec.write_text("kind: encoder\nname: repl\ninput: [8, 8]\nlayers:\n"
                        "  - {name: c, op: conv, out: 4, kernel: 3}\n  - {name: d, op: repl_double}\n"
                        "taps: {stride1: d}\n")
        compiled = compile_model(spec)
        with pytest.raises(SourceEmitError) as caught:
            standalone_source(compiled)
        message = str(caught.value)
        assert message.startswith("op 'repl_double' (layer 'encoder.d'): the source of __main__.repl_double "
                                  "cannot be found")
        assert "define the op in a module file and load it with --ops MODULE or an entry point" in message
        assert rtsegc(["compile", str(spec), "--save-code", str(tmp_path / "x.py")]) == 2
        err = capsys.readouterr().err
        assert "--save-code: op 'repl_double'" in err and "Traceback" not in err
    finally:
        unregister("repl_double")
