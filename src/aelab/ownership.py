"""The user's files: what in a folder aelab wrote, and the one place that removes it.

aelab never removes or replaces a file it did not write. It knows its own run by a marker
(:func:`is_aelab_run`: a ``config.json`` holding aelab's ``format_version`` and
``aelab_version`` keys) and its own files in a run by name (:data:`RUN_FILES`, the figures by
the names aelab gives them). :func:`clear_run` removes exactly those (``--overwrite``);
anything else in the folder stays. :func:`check_out` refuses an output folder that cannot be
meant (empty, the filesystem's root); :func:`check_output_file` refuses to write over an
input or over an existing file unless asked (``--overwrite``); :func:`check_writable` refuses
a folder that cannot be written before any work starts.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from .errors import ConfigError

CONFIG, WEIGHTS, HISTORY, METRICS, CHECKPOINT = (
    "config.json", "model.safetensors", "history.json", "metrics.json", "checkpoint.pt")
PARTIAL = ("evaluation.partial.json", "evaluation.partial.npz")  # an interrupted evaluation's results

BEST_WEIGHTS = "model.best.safetensors"  # --keep best
TENSORBOARD = "tensorboard"  # --tensorboard's event files, and embed's projector files in a folder per map
EVENTS = "events.out.tfevents.*"
PROJECTOR = ("projector_config.pbtxt", "[0-9]*/*/tensors.tsv", "[0-9]*/*/metadata.tsv", "[0-9]*/*/sprite.png")

# What a run's writers (train, evaluate, embed, report, explore, sample) put into it, by name:
# --overwrite removes these and nothing else (the folders they leave empty go too).
RUN_FILES = (CONFIG, WEIGHTS, BEST_WEIGHTS, HISTORY, METRICS, CHECKPOINT, "evaluation.md", "evaluation.json",
             *PARTIAL, "embedding_*.npz", "report.html", "explore.html", f"{TENSORBOARD}/{EVENTS}",
             f"{TENSORBOARD}/embedding_*/{EVENTS}", *(f"{TENSORBOARD}/embedding_*/{p}" for p in PROJECTOR))
FIGURES = "figures"
FIGURE_FILES = ("history.png", "samples.png", "noisy_samples.png", "denoised.png", "hardest.png",
                "evaluate_*.png", "map_*.png", "vae_*.png", "rd_*.png")


def check_out(out, flag: str = "--out") -> Path:
    """``out`` as a Path, refusing what no one means as an output folder: an empty string (which
    would be the current folder) and the filesystem's root."""
    if out is None or str(out).strip() == "":
        raise ConfigError(f"expected a folder for {flag}, found an empty path; name the folder, "
                          f"e.g. {flag} runs/mine ({flag} . for the current folder)")
    path = Path(out)
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise ConfigError(f"expected a folder of its own for {flag}, found the filesystem's root {str(out)!r}; "
                          f"choose a folder such as {flag} runs/mine")
    return path


def is_aelab_run(folder) -> bool:
    """Whether ``folder/config.json`` is one aelab wrote (its marker keys), whatever else it holds."""
    path = Path(folder) / CONFIG
    if path.is_symlink() or not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return (isinstance(config, dict) and isinstance(config.get("format_version"), int)
            and isinstance(config.get("aelab_version"), str) and isinstance(config.get("model"), dict))


def run_files(folder) -> list[Path]:
    """The files of aelab's own names in ``folder`` (the figures aelab draws included, not the
    rest of ``figures/``), in a fixed order."""
    folder = Path(folder)
    found = [p for pattern in RUN_FILES for p in sorted(folder.glob(pattern))]
    figures = folder / FIGURES
    if figures.is_dir() and not figures.is_symlink():
        found += [p for pattern in FIGURE_FILES for p in sorted(figures.glob(pattern))]
    return found


def foreign_files(folder) -> list[Path]:
    """Files with aelab's names in ``folder`` when its ``config.json`` is not aelab's (or is
    missing): another program's (a Hugging Face model folder's ``config.json``), or the user's."""
    folder = Path(folder)
    if is_aelab_run(folder):
        return []
    return [p for p in run_files(folder) if p.name != CONFIG or p.exists()]


def clear_run(folder) -> list[Path]:
    """Remove aelab's own files from the aelab run in ``folder`` (:func:`run_files`); return them.

    Refuses a folder whose ``config.json`` is not aelab's: nothing is removed then. An empty
    ``figures/`` left behind goes too; one that holds the user's files stays with them.
    """
    folder = Path(folder)
    if (folder / CONFIG).exists() and not is_aelab_run(folder):
        raise ConfigError(f"expected a run written by aelab in {folder}, found a config.json that aelab did not "
                          "write; nothing was removed: choose another --out")
    removed = []
    for path in run_files(folder):
        if path.is_dir() and not path.is_symlink():
            continue  # aelab writes files under these names, never folders: a folder is the user's
        _unlink(path)
        removed.append(path)
    for parent in sorted({p.parent for p in removed if p.parent != folder}, key=lambda p: -len(p.parts)):
        for empty in (parent, *parent.parents):  # the folders that held aelab's files (tensorboard/), if now empty
            if empty == folder or empty == folder / FIGURES or not empty.is_dir() or empty.is_symlink():
                break
            try:
                empty.rmdir()
            except OSError:  # the user's files are in it: it stays
                break
    figures = folder / FIGURES
    if figures.is_dir() and not figures.is_symlink():
        try:
            figures.rmdir()
        except OSError:  # the user's files are in it: it stays
            pass
    return removed


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"could not remove {path} ({exc.strerror or exc}); check the folder's permissions "
                          "or choose another --out") from None


# what a folder given as input has read from it (an image folder: its images, directly inside or one
# class folder down; an .npz): an output there under such a name is one of the inputs
READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz")


def _real_location(path: Path) -> Path:
    """``path`` with its folder resolved (links along the way followed), its own name kept."""
    return Path(os.path.realpath(path.parent)) / path.name


def _identity(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _Inputs:
    """The inputs of a command, to ask whether an output path is one of them: a file by identity
    (device and inode: a link or another spelling of it is the same file), a folder by what is
    read from it (:data:`READ_SUFFIXES`, in it or one folder down)."""

    def __init__(self, inputs):
        self.files, self.folders = set(), []
        for source in inputs or ():
            source = Path(source)
            if source.is_dir():
                self.folders.append(Path(os.path.realpath(source)))
            else:
                ident = _identity(source)
                self.files.add(ident if ident is not None else Path(os.path.abspath(source)))

    def __contains__(self, path: Path) -> bool:
        if not os.path.lexists(path):
            return False
        ident = _identity(path)
        if (ident if ident is not None else Path(os.path.abspath(path))) in self.files:
            return True
        if self.folders and path.suffix.lower() in READ_SUFFIXES:
            where = _real_location(path).parent
            return any(where == folder or where.parent == folder for folder in self.folders)
        return False


def check_output_file(path, inputs=(), overwrite: bool = False, flag: str = "--overwrite",
                      what: str = "another output name", example: str = "images.ael") -> Path:
    """Refuse to write ``path`` over one of ``inputs`` (always: files, or folders whose images are
    read), or over an existing file unless ``overwrite``; return ``path``. A folder at ``path``
    is refused too (a file is expected: ``example`` in it, say). ``what``: the fix, how to name
    another output."""
    path = Path(path)
    if path in _Inputs(inputs):
        raise ConfigError(f"expected an output other than the inputs, found {path} among them; writing it "
                          f"would destroy that input: choose {what}")
    if path.is_dir():
        raise ConfigError(f"expected a file to write at {path}, found a folder; name a file in it, "
                          f"e.g. {path / example}")
    if os.path.lexists(path) and not overwrite:
        raise ConfigError(f"expected a new file at {path}, found one already there; pass {flag} to replace it, "
                          f"or choose {what}")
    return path


def check_output_files(paths, inputs=(), overwrite: bool = False, flag: str = "--overwrite",
                       what: str = "another --out") -> list[Path]:
    """:func:`check_output_file` for each of ``paths``, all before any is written; the first
    refusal names how many more were in the way. ``what``: the fix, where else to write."""
    paths = [Path(p) for p in paths]
    known = _Inputs(inputs)
    for path in paths:
        if path in known:
            raise ConfigError(f"expected outputs other than the inputs, found {path} among them; writing it "
                              f"would destroy that input: choose {what}")
    folder = next((p for p in paths if p.is_dir()), None)
    if folder is not None:
        raise ConfigError(f"expected to write the file {folder}, found a folder of that name; move it away, "
                          f"or choose {what}")
    existing = [p for p in paths if os.path.lexists(p)]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ConfigError(f"expected new files, found {existing[0]}{more} already there; pass {flag} to "
                          f"replace them, or choose {what}")
    return paths


def check_writable(folder, fix: str = "choose another --out") -> Path:
    """Refuse, before any work, a ``folder`` that cannot take a file (read-only, no permission, a
    file in the way): a file is created in it and removed again (in the nearest folder that exists
    when ``folder`` does not yet: it would be created there). ``fix``: what the user can do."""
    folder = Path(folder)
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"expected a folder at {probe}, found a file; {fix}")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".aelab-write-check.", suffix=".tmp")
    except OSError as exc:
        where = "" if probe == folder else f" ({probe}, where it would be created)"
        raise ConfigError(f"expected a folder aelab can write in at {folder}, found it "
                          f"{_not_writable(exc)}{where}; {fix}") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass
    return folder


def _not_writable(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "on a read-only filesystem"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "read-only (permission denied)"
    return f"not writable ({exc.strerror or exc})"


__all__ = ["RUN_FILES", "FIGURE_FILES", "check_out", "is_aelab_run", "run_files", "foreign_files", "clear_run",
           "check_output_file", "check_output_files", "check_writable"]
