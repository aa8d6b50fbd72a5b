"""Fixtures shared by every layer of the test suite. Imports no torch.

``tests/unit`` must run where torch is missing (the analytic audit needs only
PyYAML, jsonschema and networkx), so nothing here may import it; torch tests
import it themselves.

Most tests build a tiny spec in ``tmp_path`` rather than reading one from
``specs/``: a three-layer encoder at 24x40 makes every expected number small
enough to derive by hand in the test's docstring.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# Check the graph invariants between the pipeline's passes in every test that compiles a spec
# (rtseg_compiler/passes/check.py), as torch.fx's tests lint their graphs. A run can turn it off
# with RTSEGC_CHECK=0.
os.environ.setdefault("RTSEGC_CHECK", "1")
# The runtime caches what decoding each dataset sample found (runtime/datasets.py); tests keep that cache
# in a folder of their own, not in the user's ~/.cache. Subprocesses inherit the setting.
import tempfile as _tempfile  # noqa: E402

if "RTSEGC_DATA_CACHE" not in os.environ:  # made here, so removed here when the session ends
    import atexit as _atexit

    os.environ["RTSEGC_DATA_CACHE"] = _tempfile.mkdtemp(prefix="rtsegc-test-data-cache-")
    _atexit.register(shutil.rmtree, os.environ["RTSEGC_DATA_CACHE"], ignore_errors=True)

#: The repository root (the directory holding ``specs/`` and ``pyproject.toml``).
REPO_ROOT = Path(__file__).resolve().parent.parent
SPECS = REPO_ROOT / "specs"
#: The example user-op package (docs/extending.md); tests install it as a user would.
EXAMPLE_OPS = REPO_ROOT / "examples" / "rtsegc-example-ops"

SpecWriter = Callable[..., Path]

#: Distributions whose versions change what the suite sees; printed at the top of every run so a
#: failure on another machine can be matched to the versions it ran with.
REPORTED_VERSIONS = ("torch", "torchvision", "PyYAML", "jsonschema", "networkx", "numpy", "pillow",
                     "graphviz", "hypothesis")


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions_line() -> str:
    """One line of versions, PyYAML's backend included (libyaml changes parser behaviour)."""
    import yaml  # the project's own dependency; importing it does not import torch

    backend = "with libyaml" if getattr(yaml, "__with_libyaml__", False) else "pure Python"
    parts = [f"python {platform.python_version()}"]
    for name in REPORTED_VERSIONS:
        version = _installed(name)
        parts.append(f"{name} {version}" + (f" ({backend})" if name == "PyYAML" else ""))
    return "versions: " + ", ".join(parts)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Print the versions first, also under ``-q`` (which hides pytest's own header)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(versions_line())


#: Tests left out of the fast subset (``pytest -m "not slow"``, README), by function (all its
#: parameters): those whose calls took 3 s or more in all on the shared 2-core machine (load 12-17,
#: so about 0.7 s of CPU time and more each), and twelve that took 2.1-10 s at load 2-9. CI runs
#: them; ``-m slow`` runs only them.
SLOW_TESTS = frozenset({
    "torch/test_baselines.py::test_enet_real_forward_shortcut_and_unpool",
    "torch/test_baselines.py::test_segnet_real_forward_at_odd_size",
    "torch/test_baselines.py::test_unpool_matches_torch_reference",
    "torch/test_build_routes.py::test_compile_model_and_create_model_build_the_same_module",
    "torch/test_build_routes.py::test_the_inference_build_is_the_same_through_either_door",
    "torch/test_cli_compile.py::test_installed_rtsegc_script_compiles",
    "torch/test_cli_inference.py::test_bench_inference_rows",
    "torch/test_compare_bench.py::test_compare_bench_adds_latency_and_fps",
    "torch/test_create_model.py::test_deepcopy_and_pickle_keep_the_module_and_what_it_carries",
    "torch/test_create_model.py::test_features_only_returns_each_tap_as_feature_info_says",
    "torch/test_create_model.py::test_in_chans_adapts_pretrained_first_conv_weights_as_timm_does",
    "torch/test_create_model.py::test_module_is_trainable_and_carries_its_audit",
    "torch/test_create_model.py::test_pretrained_backbone_equals_torchvision_features",
    "torch/test_emit.py::test_flop_counter_equals_audit",
    "torch/test_emit.py::test_flops_scale_with_batch_and_shapes_do_not_depend_on_it",
    "torch/test_emit.py::test_layer_shapes_equal_inferred_types",
    "torch/test_emit.py::test_params_equal_audit",
    "torch/test_emit.py::test_real_forward_is_finite_with_right_shape",
    "torch/test_emit.py::test_real_forward_layer_shapes_at_odd_size",
    "torch/test_example_ops_torch.py::test_blur_pool_dilation_declaration_is_exact",
    "torch/test_example_ops_torch.py::test_example_model_contract",
    "torch/test_example_ops_torch.py::test_rtsegc_compile_with_the_installed_package",
    "torch/test_export.py::test_exported_program_round_trip_dynamic",
    "torch/test_export.py::test_onnx_outputs_carry_the_spec_names",
    "torch/test_export.py::test_onnx_round_trip_dynamic",
    "torch/test_inference.py::test_channels_last_inference_build",
    "torch/test_inference.py::test_encoder_conv_bias_fold",
    "torch/test_inference.py::test_folded_output_equals_eval_module",
    "torch/test_inference.py::test_skipnet_folds_every_batch_norm_and_keeps_the_audit_exact",
    "torch/test_inplace.py::test_training_gradients_equal_without_inplace",
    "torch/test_ops_torch.py::test_conv_out_is_conv2d_output_size",
    "torch/test_output_stride_exact.py::test_dilated_encoder_equals_the_strided_one_on_the_subsampled_grid",
    "torch/test_output_stride_exact.py::test_vgg_pool_removal_is_not_exact",
    "torch/test_outputs.py::test_blocks_with_when_op_parameters_and_named_inputs",
    "torch/test_outputs.py::test_main_only_drops_the_auxiliary_head",
    "torch/test_outputs.py::test_module_returns_the_outputs_in_order_with_inferred_shapes",
    "torch/test_outputs.py::test_se_bottleneck_with_when_and_op_parameters_matches_a_hand_written_reference",
    "torch/test_properties.py::test_random_encoder_meta_pairs_match_torch",
    "torch/test_properties.py::test_random_encoders_match_torch",
    "torch/test_published_variants.py::test_mobilenet_v1_relu6_encoder_is_timms_mobilenetv1_100",
    "torch/test_python_source.py::test_cli_save_code_file_runs_without_rtseg_compiler",
    "torch/test_python_source.py::test_every_zoo_model_at_a_small_input",
    "torch/test_python_source.py::test_lines_carry_layer_names_and_shapes",
    "torch/test_python_source.py::test_saved_module_is_identical",
    "torch/test_python_source.py::test_several_outputs_return_the_same_dict",
    "torch/test_runtime.py::test_ddp_two_processes_on_gloo",
    "torch/test_runtime.py::test_train_writes_a_checkpoint_that_resumes",
    "torch/test_runtime_data.py::test_bad_samples_are_named_and_skippable",
    "torch/test_runtime_data.py::test_ctrl_c_writes_last_pt_and_resume_continues",
    "torch/test_runtime_data.py::test_sigkill_during_a_checkpoint_write_keeps_the_last_complete_one",
    "torch/test_runtime_data.py::test_training_killed_mid_checkpoint_resumes_from_the_last_complete_one",
    "torch/test_torchvision_equivalence.py::test_deeplabv3_resnet50_with_aux_head",
    "torch/test_torchvision_equivalence.py::test_lraspp_mobilenet_v3_large",
    "torch/test_weights_import.py::test_pretrained_inference_build_folds_the_imported_weights",
    "torch/test_weights_import.py::test_resnet18_from_pth_and_safetensors_files",
    "torch/test_weights_import.py::test_timm_mobilenetv1_100_layout",
    "torch/test_weights_import.py::test_torchvision_classifier_imports_exactly_from_memory",
    "torch/test_weights_import.py::test_training_takes_a_weight_source",
    "torch/test_zoo_models.py::test_models_compile_on_cpu_with_same_params",
    "torch/test_zoo_models.py::test_other_models_match_audit",
    "torch/test_zoo_models.py::test_segmentation_model_matches_audit",
    "unit/test_compare.py::test_peak_activation_matches_a_brute_force_schedule",
    "unit/test_fuzz.py::test_mutated_file_validates_or_reports",
    "unit/test_fuzz.py::test_mutated_model_compiles_or_raises_spec_error",
    "unit/test_schema_precheck.py::test_never_passes_what_jsonschema_refuses",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`SLOW_TESTS` ``slow``, as if each carried ``@pytest.mark.slow``."""
    for item in items:
        function = item.nodeid.split("[", 1)[0].removeprefix("tests/")
        if function in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def specs_dir() -> Path:
    return SPECS


@pytest.fixture
def write_spec(tmp_path: Path) -> SpecWriter:
    """``write_spec(name, text)`` writes dedented YAML to ``tmp_path/name`` and returns the path.

    ``name`` may contain directories (``"meta/head.yaml"``); they are created.
    """

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


def encoder_yaml(layers: str, *, input_size: tuple[int, int] = (24, 40), channels: int = 32,
                 extra: str = "") -> str:
    """An encoder spec around ``layers`` (YAML list items, any indentation).

    The default input, 32 channels at 24x40, is the one of the measured micro-op
    table in flop-conventions.md §2, so its MAC counts can be pinned directly.
    """
    body = textwrap.indent(textwrap.dedent(layers).strip("\n"), "  ")
    return (f"kind: encoder\nname: probe\ninput: [{input_size[0]}, {input_size[1]}]\n"
            f"input_channels: {channels}\n{textwrap.dedent(extra)}layers:\n{body}\n")


@pytest.fixture
def encoder_spec(write_spec: SpecWriter) -> Callable[..., Path]:
    """``encoder_spec(layers, **kw)`` writes :func:`encoder_yaml` to ``enc.yaml`` and returns the path."""

    def make(layers: str, *, name: str = "enc.yaml", **kwargs) -> Path:
        return write_spec(name, encoder_yaml(layers, **kwargs))

    return make


@contextlib.contextmanager
def no_hang(seconds: int = 30) -> Iterator[None]:
    """Turn a run longer than ``seconds`` into a test failure (SIGALRM; a no-op where there is none).

    Used around the compiler on hostile and fuzzed specs, where "hangs" is the bug to catch.
    """
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - Windows
        yield
        return

    def fail(signum: int, frame: Any) -> None:
        raise AssertionError(f"the compiler was still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def example_ops_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding examples/rtsegc-example-ops installed by pip, for ``PYTHONPATH``.

    ``pip install --no-deps --no-build-isolation --no-index --target DIR`` builds the wheel
    with the setuptools already installed and copies it out, entry-point metadata included,
    as on a user's machine; nothing reaches the network. It builds from a copy, so the
    source tree gets no build/ or egg-info. Measured: 2.6-2.8 s of CPU (12-15 s wall on
    a machine with a load average of 9), once per session.
    """
    for module in ("pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: cannot install the example op package")
    root = tmp_path_factory.mktemp("example_ops")
    source = root / "src"
    shutil.copytree(EXAMPLE_OPS, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-compile", "--disable-pip-version-check", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"pip could not install the example op package:\n{proc.stderr[-3000:]}")
    assert any(site.glob("rtsegc_example_ops-*.dist-info/entry_points.txt")), "no entry point metadata"
    site.joinpath(".install_seconds").write_text(f"{time.perf_counter() - started:.2f}")
    return site


# --------------------------------------------------------------------------- rtsegc commands of the runtime
# The package is installed (editable) from another checkout, so this checkout's entry points and its
# ``rtseg_runtime`` name are not installed. ``runtime_commands`` reads the entry points that this
# checkout's pyproject.toml declares, hands them to the compiler's discovery function, and makes
# ``rtseg_runtime`` import this checkout's ``runtime/`` folder (what setup.py's package-dir installs).

def declared_command_entry_points() -> list:
    import tomllib
    from importlib import metadata

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    group = "rtseg_compiler.commands"
    return [metadata.EntryPoint(name, value, group) for name, value in project["entry-points"][group].items()]


@pytest.fixture
def runtime_commands(monkeypatch):
    import rtseg_compiler.commands as commands

    eps = declared_command_entry_points()
    monkeypatch.setattr(commands, "_installed", lambda: eps)
    return eps


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    """Give torch its thread count back after each test: ``rtsegc bench --threads 1`` run in-process sets
    it for the whole process, and a later test comparing a forward bit for bit against one run in a
    child process (two threads) would then see the other summation order of a one-thread conv."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny networks run faster on one thread, and CI machines share their 2 cores between jobs; the
    runtime test modules use it for every test (``pytestmark``). They import torch themselves; this
    file must not (tests/unit/test_no_torch.py)."""
    torch = sys.modules["torch"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
