"""The memory aelab reads before it allocates (aelab.arrays.available_memory): psutil's, on any
platform; the /proc/meminfo reading when psutil is missing."""

from pathlib import Path

import pytest

from aelab import arrays

MEMINFO = Path("/proc/meminfo")


def _mem_available() -> int:
    for line in MEMINFO.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no MemAvailable in /proc/meminfo")


@pytest.mark.skipif(not MEMINFO.is_file(), reason="compares with Linux's /proc/meminfo")
@pytest.mark.parametrize("with_psutil", [True, False])
def test_available_memory_agrees_with_meminfo(with_psutil, monkeypatch):
    if with_psutil:
        assert arrays.psutil is not None, "psutil is a dependency: pip install -e ."
    else:
        monkeypatch.setattr(arrays, "psutil", None)  # an install without it: the fallback
    found, expected = arrays.available_memory(), _mem_available()  # read together: memory moves
    assert found == pytest.approx(expected, rel=0.05)


def test_psutil_is_what_is_read(monkeypatch):
    class Memory:
        available = 123_456_789

    monkeypatch.setattr(arrays.psutil, "virtual_memory", lambda: Memory())
    assert arrays.available_memory() == 123_456_789
