"""kardia: a runnable Kardia-R1 (understand, reason, then care)."""

__version__ = "0.1.0"
