"""Command-line interface: a thin skin over the library (parse, call, render)."""

from ._app import app, main

__all__ = ["app", "main"]
