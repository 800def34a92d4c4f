"""A small mixin for objects rebuilt from their constructor arguments (losses, schedules)."""
from __future__ import annotations


class Configurable:
    """``get_config()`` returns the JSON-able constructor arguments; ``from_config`` and ``repr``
    follow from it."""

    def get_config(self):
        """JSON-able constructor arguments."""
        return {}

    @classmethod
    def from_config(cls, config):
        """Recreate from ``get_config()``'s dict."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
