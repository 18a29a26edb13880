"""The README's Python example runs as written (on the tiny stand-in data set)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example(fake_fashion, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.setenv("AELAB_DATA", str(fake_fashion))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["cleaned"].shape == (10, 1, 28, 28)
    assert (tmp_path / "runs/python-example/model.safetensors").exists()


def test_readme_names_the_ci_command():
    ci = (README.parent / ".ci/run").read_text()
    assert "make test" in ci and "make test" in README.read_text()
