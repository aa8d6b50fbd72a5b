"""The README's two set-up commands stay runnable and in step with CI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_exactly_two_setup_commands():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 2, f"expected two bash set-up blocks, found {len(blocks)}"
    main_job, tests = blocks
    assert "torch==2.13.0" in main_job and "rtsegc compile" in main_job and "rtsegc flops" in main_job
    assert "torch==2.13.0" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _bash_blocks((ROOT / "README.md").read_text())[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in [line.strip() for line in ci.splitlines()], "the README's test command must appear as a line of .ci/run"


def test_torch_is_installed_before_the_project():
    for block in _bash_blocks((ROOT / "README.md").read_text()):
        assert block.index("torch==2.13.0") < block.index("-e "), block


def test_ci_runs_the_test_command_in_a_new_virtual_environment():
    """A green CI on the development machine's packages hid a PyYAML/libyaml difference once."""
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = _bash_blocks((ROOT / "README.md").read_text())[1]
    command_at = ci.index(test_command)
    venv_at = ci.index("python3 -m venv")
    activate_at = ci.index("bin/activate")
    assert venv_at < activate_at < command_at


def test_every_dependency_declares_the_floor_ci_tests():
    """Each runtime and test dependency has a ``>=`` floor, and the lowest-versions job pins it."""
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("lower_bounds", ROOT / ".ci" / "lower_bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pins = {line.split("==")[0].lower() for line in module.lower_bounds(ROOT / "pyproject.toml")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + project["optional-dependencies"]["test"]
    for requirement in declared:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()
        assert ">=" in requirement, f"{requirement}: give it a floor that CI can test"
        assert name == "torch" or name in pins, f"{name} is not pinned by the lowest-versions job"


def test_the_fast_subset_is_documented_and_its_slow_list_names_real_tests():
    from conftest import SLOW_TESTS

    assert 'pytest -q -m "not slow"' in (ROOT / "README.md").read_text()
    for name in SLOW_TESTS:
        path, function = name.split("::")
        source = (ROOT / "tests" / path).read_text()
        assert f"def {function}(" in source, f"{name}: no such test (renamed? update tests/conftest.py)"
