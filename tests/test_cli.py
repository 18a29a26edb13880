import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aelab.cli import build_parser, main


def test_train_denoise_report_through_main(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "16",
                 "--out", str(run), "--no-progress", "--option", "reconstruction=l1"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["options"]["reconstruction"] == "l1"
    np.savez(tmp_path / "in.npz", x=np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32))
    assert main(["denoise", "--run", str(run), str(tmp_path / "in.npz"), "--out", str(tmp_path / "den")]) == 0
    assert np.load(tmp_path / "den" / "denoised.npz")["x"].shape == (3, 1, 28, 28)
    assert (tmp_path / "den" / "side_by_side.png").exists()
    assert main(["data", "show", "--data", str(fake_fashion), "--out", str(tmp_path / "show")]) == 0
    assert (tmp_path / "show" / "samples.png").exists() and (tmp_path / "show" / "noisy_samples.png").exists()


def test_train_amp_flag_is_saved_and_trains_a_unet(fake_fashion, tmp_path):
    """--amp bf16 runs the training under bf16 autocast, also on the CPU; the run records it and
    the saved weights stay float32."""
    import torch

    from aelab import runs

    run = tmp_path / "amp"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "16", "--net", "unet",
                 "--net-option", "widths=[4,8]", "--amp", "bf16", "--out", str(run), "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["amp"] == "bf16"
    model = runs.load_model(run)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    hist = json.loads((run / "history.json").read_text())
    assert all(np.isfinite(v) for values in hist["train"].values() for v in values)


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "expected epochs >= 1, found 0"),
    (["train", "--kind", "nope"], "unknown kind 'nope'; expected one of"),
    (["train", "--net", "nope"], "unknown network 'nope'; expected one of"),
    (["train", "--noise", "gaussian:-2"], "noise factor"),
    (["report", "--run", "/nonexistent/run"], "expected a run directory"),
])
def test_user_errors_are_one_line(fake_fashion, tmp_path, capsys, argv, message):
    argv = argv + (["--data", str(fake_fashion), "--out", str(tmp_path / "r"), "--no-progress"]
                   if argv[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelab: error: ") and message in err and "\n" not in err


def test_missing_data_message(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "expected a folder, an .npz or Fashion-MNIST files at" in capsys.readouterr().err


def test_train_help_lists_every_kind_network_and_option():
    """`aelab train --help` lists the kinds and networks from a static table (so --help needs no
    torch); it must name every registered kind and network and every option they take."""
    import inspect

    from aelab.commands import KINDS, NETS
    from aelab.models import MODELS
    from aelab.nets import NETS as REGISTERED_NETS

    assert set(KINDS) == set(MODELS) and set(NETS) == set(REGISTERED_NETS)
    skip = {"self", "input_shape", "net", "net_options"}
    for kind, cls in MODELS.items():
        for name in inspect.signature(cls.__init__).parameters:
            assert name in skip or name in KINDS[kind], f"kind {kind}: option {name} missing from the help"
    for net, builder in REGISTERED_NETS.items():
        for name in inspect.signature(builder).parameters:
            assert name == "input_shape" or name in NETS[net], f"network {net}: option {name} missing from the help"


def test_help_and_version_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from aelab.cli import main\n"
            "for argv in (['--help'], ['--version'], ['train', '--help'], ['train', '--epochs', 'x']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


# -- a Ctrl-C during start-up (issue "careless and hostile use", item 9) -------------------

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _as_at_a_terminal():
    """Ctrl-C as in a terminal: a shell starts a background job (`make test &`) with SIGINT
    ignored, which its children inherit and Python then leaves alone."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

# The child sends itself SIGINT when it starts importing MODULE, as a Ctrl-C at that moment
# would: then it starts aelab the way ENTRY says.
_CTRL_C_AT_IMPORT = """
import os, signal, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
sys.argv = ["aelab", "train", "--data", {data!r}, "--epochs", "1", "--out", {out!r}, "--no-progress"]
{entry}
"""
ENTRIES = {
    "console script": "from aelab.__main__ import run\nsys.exit(run())",  # what pip's `aelab` script runs
    "python -m aelab": "import runpy\nrunpy.run_module('aelab', run_name='__main__', alter_sys=True)",
    "aelab.cli.main": "from aelab.cli import main\nsys.exit(main())",
}


def _one_interrupted_line(proc) -> str:
    assert proc.returncode == 130, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line, found {proc.stderr!r}"
    reason = lines[0].removeprefix("aelab: interrupted:").strip()
    assert lines[0].startswith("aelab: interrupted: ") and reason, f"expected a reason, found {lines[0]!r}"
    return reason


@pytest.mark.parametrize("module, entry", [
    ("aelab.cli", "console script"), ("aelab.cli", "python -m aelab"),
    ("torch", "console script"), ("torch", "python -m aelab"), ("torch", "aelab.cli.main"),
])
def test_ctrl_c_while_starting_is_one_line(fake_fashion, tmp_path, module, entry):
    """A Ctrl-C while the command line loads (aelab.cli) or while a subcommand imports torch."""
    code = _CTRL_C_AT_IMPORT.format(module=module, data=str(fake_fashion), out=str(tmp_path / "r"),
                                    entry=ENTRIES[entry])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": SRC}, preexec_fn=_as_at_a_terminal)
    _one_interrupted_line(proc)
    assert not (tmp_path / "r").exists()


def test_ctrl_c_a_moment_after_start(fake_fashion, tmp_path):
    """A real Ctrl-C a moment after `python -m aelab train` started, while torch loads."""
    proc = subprocess.Popen([sys.executable, "-m", "aelab", "train", "--data", str(fake_fashion), "--epochs", "1",
                             "--out", str(tmp_path / "r"), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC},
                            preexec_fn=_as_at_a_terminal)
    # wait until torch's library is being mapped (the interpreter runs aelab and is importing
    # torch), not a fixed delay: on a loaded machine 0.3 s can fall before Python handles SIGINT
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "libtorch" in maps.read_text():
                break
        except OSError:
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.stdout, proc.stderr = proc.communicate(timeout=120)
    _one_interrupted_line(proc)


def test_the_console_script_is_the_guarded_entry():
    text = (Path(SRC).parent / "pyproject.toml").read_text()
    assert 'aelab = "aelab.__main__:run"' in text


def _subcommands(parser):
    """(name, parser) for every subcommand, nested ones (`aelab data show`) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subcommands(sub):
                    yield f"{name} {inner}", subsub


def test_every_flag_has_help_and_every_command_an_example():
    parser = build_parser()
    assert "examples:" in parser.format_help()
    missing, no_example = [], []
    for name, sub in _subcommands(parser):
        if "example" not in (sub.description or ""):
            no_example.append(name)
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"aelab {name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"expected a help text for every flag, found none for {missing}"
    assert not no_example, f"expected an example in each description, found none for {no_example}"
