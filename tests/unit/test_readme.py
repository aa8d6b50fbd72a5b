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
    assert test_command in ci.splitlines(), "the README's test command must appear as a line of .ci/run"


def test_torch_is_installed_before_the_project():
    for block in _bash_blocks((ROOT / "README.md").read_text()):
        assert block.index("torch==2.13.0") < block.index("-e "), block
