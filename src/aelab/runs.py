"""A run on disk: ``config.json``, ``model.safetensors``, ``history.json``,
``metrics.json``, ``figures/``, ``report.html``; plus ``checkpoint.pt`` (training state for
``--resume``, loaded with ``weights_only=True``).

Every file is written atomically: a temporary file in the same folder, flushed and
fsynced, then renamed over the target, so a run killed at any moment leaves the old file
or the new one, never a torn one. Nothing user-facing is pickled.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import arrays
from .errors import ConfigError
from .models import build_model
from .quantize import _PACKED, INT8, SCALE, SHAPE, dequantize_state
from .version import __version__

FORMAT_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)

ZOO_PREFIX = "zoo:"          # `--run zoo:NAME`: a model shipped with the package
ZOO_DIR = Path(__file__).resolve().parent / "zoo" / "models"

CONFIG, WEIGHTS, HISTORY, METRICS, CHECKPOINT = (
    "config.json", "model.safetensors", "history.json", "metrics.json", "checkpoint.pt")
BEST_WEIGHTS = "model.best.safetensors"  # --keep best: the best validation epoch's weights, beside the last


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename.

    A failure (disk full, no permission, ``path`` inside a file) is a one-line
    :class:`ConfigError` and leaves the previous ``path`` untouched.
    """
    path = Path(path)
    existed = os.path.lexists(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"expected a writable folder for {path}, found {exc.strerror or exc} "
                          f"({exc.filename or path.parent}); choose another --out") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            kept = "the previous file is kept" if existed else "nothing was written there"
            raise ConfigError(f"could not write {path} ({exc.strerror or exc}); {kept}, "
                              "free some disk space or choose another --out") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def discard(path) -> None:
    """Remove the file ``path`` if it is there (nothing there, or a parent that is not a folder,
    is fine: the write that follows reports that)."""
    try:
        Path(path).unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise ConfigError(f"could not remove {path} ({exc.strerror or exc}); check the folder's permissions "
                          "or choose another --out") from None


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def read_json(path) -> dict:
    """A JSON object from the run file ``path``; anything else (missing, a link out of its
    folder, not UTF-8, not JSON, nested too deeply, not an object) is a one-line
    :class:`ConfigError`."""
    path = own_file(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"expected {path.name} in {path.parent}, found nothing; "
                          "is this a run directory written by `aelab train` or `aelab reproduce`?") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: expected valid JSON, found an error at line {exc.lineno} ({exc.msg}); "
                          "the file is damaged, retrain or restore it") from None
    except RecursionError:
        raise ConfigError(f"{path}: expected JSON nested at most a few hundred levels deep, found it nested too "
                          f"deeply (more than {sys.getrecursionlimit()} levels); the file is damaged or "
                          "hostile, retrain or restore it") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: expected a UTF-8 JSON file, found a byte that is not UTF-8 at offset "
                          f"{exc.start}; the file is damaged, retrain or restore it") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc}); check that it is a readable file") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a JSON object {{...}}, found a {type(obj).__name__}; "
                          "the file is damaged, retrain or restore it")
    return obj


def check_keys(section: dict, known, where: str) -> None:
    """Refuse a key of ``section`` that is not in ``known``, naming the closest valid one."""
    known = sorted(known)
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}")


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unwrapped module's state dict (no ``module.`` or ``_orig_mod.`` prefixes)."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}


def save_weights(model: torch.nn.Module, path) -> Path:
    """The model's weights as a safetensors file, written atomically."""
    return atomic_write_bytes(path, save_safetensors(plain_state_dict(model), metadata={"format": "pt"}))


def load_weights(model: torch.nn.Module, path) -> torch.nn.Module:
    """Load the safetensors run file ``path`` into ``model``; a damaged or mismatched file, or a
    link out of its folder, is a one-line error."""
    path = own_file(path)
    try:
        state = load_safetensors(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"expected weights at {path}, found nothing; the run did not finish "
                          "training (resume it with --resume)") from None
    except (SafetensorError, ValueError, OSError, TypeError) as exc:
        raise ConfigError(f"{path}: expected a safetensors file, could not read it ({exc}); "
                          "the file is damaged, retrain or restore it") from None
    state = dequantize_state(state, str(path))  # a zoo file may hold 8-bit weights
    own = model.state_dict()
    derived = set(getattr(model, "derived_keys", ()))  # sized by the file, may be absent (codec tables)
    missing = [k for k in own if k not in state and k not in derived]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and k not in derived and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                  f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the config builds {tuple(own[wrong[0]].shape)}")
        raise ConfigError(f"{path}: the weights do not match the model in config.json ({detail}); "
                          "the two files come from different runs")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ConfigError(f"{path}: expected finite weights, found NaN or infinite values in {bad!r}; "
                          "the file is damaged, retrain or restore it")
    model.load_state_dict(state)
    return model


def save_model(model, run_dir, train_config: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir``. When a write fails (a full
    disk), what this call created (the files, the folders) is removed again: a new run is not
    left behind half-written, an existing one keeps its previous files."""
    run_dir = Path(run_dir)
    new_dirs = [d for d in (run_dir, *run_dir.parents) if not os.path.lexists(d)]  # deepest first
    new_files = [run_dir / n for n in (CONFIG, WEIGHTS) if not os.path.lexists(run_dir / n)]
    config = {"format_version": FORMAT_VERSION, "aelab_version": __version__,
              "model": getattr(model, "module", model).config()}
    if train_config is not None:
        config["train"] = train_config
    if extra:
        check_keys(extra, CONFIG_KEYS, "save_model(extra=...)")  # what read_config would refuse is not written
        config.update(extra)
    try:
        write_json(run_dir / CONFIG, config)
        save_weights(model, run_dir / WEIGHTS)
    except BaseException:
        for path in new_files:
            try:
                path.unlink()
            except OSError:  # never written, or not removable: the error below says what went wrong
                pass
        for folder in new_dirs:
            try:
                folder.rmdir()
            except OSError:  # not empty, or never made: leave it
                break
        raise
    return run_dir


def zoo_names() -> list[str]:
    """The models shipped in the zoo (folders of ``aelab/zoo/models`` holding a ``config.json``)."""
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / CONFIG).is_file()) if ZOO_DIR.is_dir() else []


def is_zoo(run) -> bool:
    return str(run).startswith(ZOO_PREFIX)


def locate(run) -> Path:
    """The folder of a run: a path as given, or for ``zoo:NAME`` the zoo model's folder in the package."""
    if not is_zoo(run):
        return Path(run)
    name = str(run)[len(ZOO_PREFIX):]
    names = zoo_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        raise ConfigError(f"expected a zoo model name, found {name!r}" + (f" (did you mean zoo:{close[0]}?)" if close
                          else "") + f"; the zoo has {', '.join('zoo:' + n for n in names) or 'no models'}")
    return ZOO_DIR / name


def output_dir(run, out=None) -> Path:
    """Where a command that writes beside a run puts its files: ``out`` when given, else the run
    itself; a zoo model's folder is never written: its config and weights are first copied to
    ``runs/zoo-NAME`` (once), which then takes the files. A ``runs/zoo-NAME`` that holds
    anything else under those names (an earlier version's copy, the user's own run) is neither
    trusted nor written over: a one-line :class:`ConfigError` says so."""
    if out is not None:
        return Path(out)
    if not is_zoo(run):
        return Path(run)
    source = locate(run)
    target = Path("runs") / f"zoo-{source.name}"
    shipped = {name: run_file(source, name).read_bytes() for name in (CONFIG, WEIGHTS)}
    for name, data in shipped.items():
        path = target / name
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file() or path.read_bytes() != data):
            raise ConfigError(f"expected {target} to hold the copy of {run} that aelab writes there, found a {name} "
                              f"that differs from the shipped one (an earlier version's copy, or a run of yours); "
                              f"aelab does not write over it: move {target} away (or remove it) and run again")
    for name, data in shipped.items():
        if not (target / name).is_file():
            atomic_write_bytes(target / name, data)
    return target


def read_config(run_dir) -> dict:
    run_dir = locate(run_dir)
    if not run_dir.is_dir():
        if os.path.lexists(run_dir):  # a file (the weights, an image, a config.json itself): not nothing
            hint = f", e.g. --run {run_dir.parent}" if (run_dir.parent / CONFIG).is_file() else ""
            raise ConfigError(f"expected a run directory at {run_dir}, found a file; pass the run's folder (the "
                              f"one holding config.json and model.safetensors){hint}")
        raise ConfigError(f"expected a run directory at {run_dir}, found nothing; "
                          "train one with `aelab train --out DIR` or `aelab reproduce`")
    path = run_file(run_dir, CONFIG)
    config = read_json(path)
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"{path}: expected an integer 'format_version', found {version!r}; "
                          "the file is damaged, retrain or restore it")
    if version > FORMAT_VERSION:
        raise ConfigError(f"{path}: written by a newer aelab (format {version}, this one reads "
                          f"up to {FORMAT_VERSION}); upgrade aelab with pip install -U aelab")
    if not isinstance(config.get("model"), dict):
        close = difflib.get_close_matches("model", [str(k) for k in config if k != "model"], n=1)
        hint = f" (is {close[0]!r} a misspelling of 'model'?)" if close else ""
        raise ConfigError(f"{path}: expected a 'model' section, found none{hint}; the file is damaged, "
                          "retrain or restore it")
    check_model_config(config["model"], where=f"{path} 'model'")
    unknown = next((k for k in config if k not in CONFIG_KEYS), None)
    if unknown is not None:  # a typo or a hand edit would otherwise be ignored in silence
        close = difflib.get_close_matches(str(unknown), list(CONFIG_KEYS), n=1)
        raise ConfigError(f"{path}: expected only the keys aelab writes ({', '.join(CONFIG_KEYS)}), found unknown "
                          f"key {unknown!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                          + "; rename or remove it")
    for key, kind in CONFIG_KEYS.items():
        if key in config and config[key] is not None and not isinstance(config[key], kind):
            raise ConfigError(f"{path}: expected {key!r} to be a {kind.__name__}, found {json.dumps(config[key])[:60]}; "
                              "the file is damaged, retrain or restore it")
    return config


# The top-level keys of config.json: what save_model writes (format_version, aelab_version,
# model, train) and the extras of train, compare and reproduce (class_names, initialised_from,
# command; weights: "best" when a run trained with --keep best loads model.best.safetensors), which the
# zoo's copies keep. Any other key is a typo or a hand edit: refused.
CONFIG_KEYS = {"format_version": int, "aelab_version": str, "model": dict, "train": dict, "class_names": list,
               "initialised_from": str, "command": str, "weights": str}


MODEL_KEYS = {"kind": str, "net": str, "input_shape": list, "net_options": dict, "options": dict}


def check_model_config(model_config: dict, where: str = "config.json 'model'") -> None:
    """Keys and types of a config's 'model' section: a :class:`ConfigError` naming what is wrong."""
    check_keys(model_config, MODEL_KEYS, where)
    for key in ("kind", "input_shape"):
        if key not in model_config:
            raise ConfigError(f"{where}: expected {key!r}, found only {sorted(model_config)}; "
                              "the file is damaged, retrain or restore it")
    for key, kind in MODEL_KEYS.items():
        if key in model_config and not isinstance(model_config[key], kind):
            raise ConfigError(f"{where}: expected {key!r} to be a {kind.__name__}, found "
                              f"{model_config[key]!r}; the file is damaged, retrain or restore it")
    shape = model_config["input_shape"]
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise ConfigError(f"{where}: expected 'input_shape' [C, H, W] of three positive integers, found "
                          f"{shape!r}; the file is damaged, retrain or restore it")


def weights_header(path) -> dict[str, tuple]:
    """The tensors of the safetensors run file ``path``, name -> shape, from its header alone
    (nothing else is read); a missing or damaged file is a one-line :class:`ConfigError`."""
    path = own_file(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            length = int.from_bytes(fh.read(8), "little") if size >= 8 else -1
            if not 2 <= length <= min(size - 8, 100_000_000):
                raise ValueError(f"a header of {length} bytes in a file of {size}")
            header = json.loads(fh.read(length).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("a header that is not a JSON object")
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except FileNotFoundError:
        raise ConfigError(f"expected weights at {path}, found nothing; the run did not finish "
                          "training (resume it with --resume)") from None
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ConfigError(f"{path}: expected a safetensors file, could not read it ({exc}); "
                          "the file is damaged, retrain or restore it") from None


def planned_model(model_config: dict):
    """The model ``model_config`` describes, built on PyTorch's meta device: its layers and shapes
    without the memory (a dense network on 2048x2048 images is 8.6 GB and half a minute to build).
    None when the model cannot be built there (then only the real build can tell)."""
    check_model_config(model_config)
    try:
        with torch.device("meta"):
            return build_model(model_config["kind"], model_config["input_shape"], net=model_config.get("net", "conv"),
                               net_options=model_config.get("net_options"), **model_config.get("options", {}))
    except ConfigError:
        raise
    except Exception:  # an operation the meta device lacks: leave the checks to the real build
        return None


def _check_model_memory(planned, where: str) -> None:
    """Refuse, before it is built, a model whose tensors cannot fit in the memory available."""

    tensors = list(planned.state_dict().values())
    need, free = sum(t.numel() * t.element_size() for t in tensors), arrays.available_memory()
    if need > free:
        params = sum(t.numel() for t in tensors)
        raise ConfigError(f"{where}: expected a model that fits in memory ({free / 1e9:.1f} GB available), found one "
                          f"of {params:,} values that would need {need / 1e9:.1f} GB; check 'input_shape' and 'net' "
                          "(a dense network on large images has a weight per pixel and unit), or use a machine with "
                          "more memory")


def check_weights_fit(model_config: dict, path) -> None:
    """Refuse weights that do not fit the model of ``model_config``, from the safetensors header of
    ``path`` and the model planned on the meta device, before anything is built or read (a
    config edited to 2048x2048 images beside 28x28 weights is refused at once, not after building
    an 8.6 GB model); and a model too big for the memory. :func:`load_weights` checks the rest."""

    stored_raw = weights_header(path)
    planned = planned_model(model_config)
    if planned is None:
        return
    own = {k: tuple(v.shape) for k, v in planned.state_dict().items()}
    derived = set(getattr(planned, "derived_keys", ()))
    stored = {}
    for key, shape in stored_raw.items():
        if key.endswith(INT8):
            stored[key[:-len(INT8)]] = shape
        elif _PACKED.search(key):
            stored[key[:key.rindex("#")]] = None  # packed: the shape is in the data, load_weights checks it
        elif not key.endswith((SCALE, SHAPE)):
            stored[key] = shape
    missing = [k for k in own if k not in stored and k not in derived]
    extra = [k for k in stored if k not in own]
    wrong = [k for k in own if k not in derived and stored.get(k) is not None and stored[k] != own[k]]
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                  f"{wrong[0]} has shape {stored[wrong[0]]}, the config builds {own[wrong[0]]}")
        raise ConfigError(f"{own_file(path)}: the weights do not match the model in config.json ({detail}); "
                          "the two files come from different runs")
    _check_model_memory(planned, str(own_file(path).parent / CONFIG))


def model_from_config(model_config: dict):
    """The model ``model_config`` describes (untrained); one too big for the memory is refused first."""
    planned = planned_model(model_config)  # checks the config too
    if planned is not None:
        _check_model_memory(planned, "config.json 'model'")
    return build_model(model_config["kind"], model_config["input_shape"], net=model_config.get("net", "conv"),
                       net_options=model_config.get("net_options"), **model_config.get("options", {}))


def load_model(run_dir, device: str | torch.device = "cpu"):
    """Rebuild the model of ``run_dir`` (a folder, or ``zoo:NAME``) from its config and load its weights, in eval mode."""
    run_dir = locate(run_dir)
    config = read_config(run_dir)
    path = weights_file(run_dir, config)
    check_weights_fit(config["model"], path)  # before building: from the headers alone
    model = model_from_config(config["model"])
    load_weights(model, path)
    return model.to(device).eval()


def weights_file(run_dir, config: dict | None = None) -> Path:
    """The weights a run loads: ``model.best.safetensors`` when its config says ``"weights": "best"``
    (trained with ``--keep best``), else ``model.safetensors`` (the last epoch's)."""
    run_dir = locate(run_dir)
    which = (config if config is not None else read_config(run_dir)).get("weights", "last")
    if which not in ("last", "best"):
        raise ConfigError(f"{run_dir / CONFIG}: expected 'weights' to be \"last\" or \"best\", found {which!r}; "
                          "the file is damaged, retrain or restore it")
    return run_file(run_dir, BEST_WEIGHTS if which == "best" else WEIGHTS)


def load_history(run_dir) -> dict:
    return read_json(run_file(run_dir, HISTORY))


def update_metrics(run_dir, **sections) -> dict:
    """Merge ``sections`` into ``metrics.json`` (created when missing) and return the whole."""
    path = run_file(run_dir, METRICS)
    metrics = read_json(path) if path.exists() else {}
    metrics.update(sections)
    write_json(path, metrics)
    return metrics


def inside(run_dir, relative: str | os.PathLike) -> Path:
    """``run_dir / relative``, refusing any path that would escape ``run_dir``: an absolute
    path, ``..`` components, or a symbolic link (anywhere along the way) pointing outside.
    Use it for every path that comes from a config, a metrics file or an archive."""
    base = locate(run_dir).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(f"expected a path inside {base}, found {str(relative)!r} which leads to {target}; "
                          "a run directory may only refer to its own files (remove the link or the path)")
    return target


def run_file(run_dir, name: str) -> Path:
    """The file ``name`` of a run directory, checked with :func:`inside` (a ``config.json`` or a
    figure that is a link to a file elsewhere is refused, not read)."""
    run_dir = locate(run_dir)
    inside(run_dir, name)
    return run_dir / name


def own_file(path) -> Path:
    """``path`` checked with :func:`run_file` against its own folder: what every reader of a
    run's files (JSON, weights, checkpoint) calls, so that none follows a link out of the run."""
    path = Path(path)
    return run_file(path.parent, path.name)


def has_config(run_dir) -> bool:
    """Whether ``run_dir`` is a training run (it holds a ``config.json``)."""
    return run_file(run_dir, CONFIG).is_file()
