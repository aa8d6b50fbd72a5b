"""rtseg_compiler.allocator: which mallopt calls are made, when none are, and that they take effect.

The decision tests use a stand-in C library that records ``mallopt`` calls, so they run anywhere;
the last test configures the real glibc in a fresh interpreter and counts page faults. No torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtseg_compiler import allocator, configure_allocator


class FakeLibc:
    """A C library handle: glibc unless told otherwise; ``refuse`` lists mallopt parameters to reject."""

    def __init__(self, extra: tuple[str, ...] = ("gnu_get_libc_version",), refuse: tuple[int, ...] = ()):
        self.calls: list[tuple[int, int]] = []
        self.refuse = refuse
        for name in extra:
            setattr(self, name, object())

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return 0 if param in refuse else 1

        mallopt.argtypes = mallopt.restype = None
        self.mallopt = mallopt


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(allocator, "_done", None)


def run(libc: FakeLibc, env: dict[str, str] | None = None) -> allocator.AllocatorSetting:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(allocator, "_libc", lambda: libc)
        return configure_allocator(env or {})


def test_glibc_gets_both_thresholds():
    libc = FakeLibc()
    setting = run(libc)
    assert libc.calls == [(-3, allocator.MMAP_THRESHOLD), (-1, allocator.TRIM_THRESHOLD)]
    assert setting.allocator == "glibc" and setting.tuned
    assert "RTSEGC_ALLOCATOR=system" in setting.detail  # the report says how to opt out


def test_second_call_changes_nothing():
    libc = FakeLibc()
    first = run(libc)
    assert run(libc) is first and len(libc.calls) == 2


@pytest.mark.parametrize("value", ["system", "SYSTEM", " system "])
def test_opt_out(value):
    libc = FakeLibc()
    setting = run(libc, {"RTSEGC_ALLOCATOR": value})
    assert libc.calls == [] and not setting.tuned and "RTSEGC_ALLOCATOR=system" in setting.detail


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "65536"}, {"MALLOC_TRIM_THRESHOLD_": "0"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}])
def test_a_users_malloc_setting_wins(env):
    libc = FakeLibc()
    setting = run(libc, env)
    assert libc.calls == [] and not setting.tuned and next(iter(env)) in setting.detail


@pytest.mark.parametrize("symbol, name", [("mallctl", "jemalloc"), ("tc_malloc", "tcmalloc"),
                                          ("MallocExtension_GetNumericProperty", "tcmalloc")])
def test_preloaded_allocator_is_left_alone(symbol, name):
    libc = FakeLibc(extra=("gnu_get_libc_version", symbol))
    setting = run(libc)
    assert libc.calls == [] and setting.allocator == name and not setting.tuned


def test_other_c_library_is_left_alone():
    libc = FakeLibc(extra=())
    setting = run(libc)
    assert libc.calls == [] and setting.allocator == "unknown" and "not glibc" in setting.detail


def test_refused_threshold_falls_back_to_no_mmap():
    """A glibc that caps M_MMAP_THRESHOLD at 32 MiB still stops mmap through M_MMAP_MAX = 0."""
    libc = FakeLibc(refuse=(-3,))
    setting = run(libc)
    assert libc.calls == [(-3, allocator.MMAP_THRESHOLD), (-4, 0), (-1, allocator.TRIM_THRESHOLD)]
    assert setting.tuned and "M_MMAP_MAX=0" in setting.detail


def test_everything_refused_is_reported():
    setting = run(FakeLibc(refuse=(-3, -4)))
    assert not setting.tuned and "refused" in setting.detail


_FAULTS = """
import json, resource, sys
from rtseg_compiler import configure_allocator
if sys.argv[1] == "tuned":
    setting = configure_allocator()
    assert setting.tuned, setting
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(48 << 20)  # 48 MiB of zeros: an mmap'd block under glibc's defaults
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and ru_minflt: Linux")
def test_real_glibc_keeps_freed_memory():
    """48 MiB allocated and freed four times: ~12,000 faults each time by default, ~0 once tuned."""
    import ctypes

    if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"):
        pytest.skip("not glibc")
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "RTSEGC_ALLOCATOR", "LD_PRELOAD")}
    result = {}
    for mode in ("default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, env=env,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        result[mode] = json.loads(proc.stdout)
    page_count = (48 << 20) // 4096
    assert min(result["default"][1:]) > page_count // 2, result
    assert max(result["tuned"][1:]) < page_count // 20, result
