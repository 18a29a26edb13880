import json

import numpy as np
import pytest

from aelab.cli import main


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
