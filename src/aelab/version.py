"""The version of aelab (kept apart so the command line can print it without importing torch)."""

__version__ = "0.1.0"
