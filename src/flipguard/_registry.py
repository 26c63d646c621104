"""Name -> class registries for the strategy families (attacks, detectors, mitigations).

Strategies are small classes registered under a name, so the CLI and
experiment plans can name them (STYLE.md: a registry, not one long function
branching on strings).
"""

from __future__ import annotations

from .exceptions import InvalidParameterError

__all__ = ["Registry"]


class Registry(dict):
    """A ``dict`` of name -> class with a registering decorator and a checked factory.

    Parameters
    ----------
    kind : str
        What the classes are, for messages ("attack strategy", "detection method").
    attr : str
        Class attribute that receives the registered name.
    """

    def __init__(self, kind: str, attr: str):
        super().__init__()
        self.kind = kind
        self.attr = attr

    def register(self, name: str):
        """Class decorator adding the class under ``name``."""

        def deco(cls):
            setattr(cls, self.attr, name)
            self[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self)

    def get_class(self, name: str) -> type:
        try:
            return self[name]
        except KeyError:
            raise InvalidParameterError(f"Unknown {self.kind} {name!r}; choose one of "
                                        f"{', '.join(self.names())}.") from None

    def make(self, name: str, **params):
        """An instance of the class registered as ``name``; unknown names or parameters say what exists."""
        cls = self.get_class(name)
        if params:
            valid = cls().get_params() if hasattr(cls, "get_params") else {}
            unknown = sorted(set(params) - set(valid))
            if unknown:
                raise InvalidParameterError(f"{self.kind.capitalize()} {name!r} has no parameter(s) "
                                            f"{', '.join(unknown)}; it takes {', '.join(sorted(valid)) or 'none'}.")
        return cls(**params)
