"""The exceptions aelab raises for bad input.

Every message is one line that says what was expected, what was found and how to fix
it. The command line prints it as ``aelab: error: <message>`` and exits with status 2;
from Python you catch the specific class (all derive from :class:`AelabError`, itself a
``ValueError``).
"""

from __future__ import annotations


class AelabError(ValueError):
    """Base class of every user-facing error in aelab."""


class DataError(AelabError):
    """A data file, folder or array is missing, malformed or out of range."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The Fashion-MNIST files are nowhere aelab looked."""


class ConfigError(AelabError):
    """An option, a config file or a run directory is not what aelab expects."""


class TrainingError(AelabError):
    """Training cannot go on (a NaN or infinite loss, for instance)."""


class AelabWarning(UserWarning):
    """Something the user should know that does not stop the command (``--resume`` with
    nothing to resume, say); the command line prints it as ``aelab: warning: <message>``."""


class DataWarning(AelabWarning):
    """Something in the data was skipped (a non-image file in an image folder, say)."""
