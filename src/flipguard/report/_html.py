"""Building blocks of a report and the self-contained HTML writer.

A report is a list of :class:`Section` objects.  Each section holds escaped
paragraphs, an optional trusted HTML fragment, figures (:class:`Image`, inlined
as ``data:`` URIs) and tables (:class:`Table`, optionally collapsible).  The
writer renders them with jinja2 (autoescape on) into one HTML file with inline
CSS and no network references, so the file can be mailed, archived or opened
offline.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from .._io import atomic_path
from ..exceptions import InvalidParameterError

__all__ = ["Image", "Section", "Table", "render_report", "write_report"]

_MIME = {"image/png", "image/svg+xml", "image/jpeg"}


@dataclass
class Image:
    """A figure inlined into the report as a ``data:`` URI.

    Parameters
    ----------
    data : bytes
        The encoded image (PNG, SVG or JPEG).
    alt : str
        Text alternative, read by screen readers and shown if the image fails.
    caption : str, default=None
        Plain-text caption under the figure (escaped).
    mime : str, default="image/png"
    width : int, default=None
        Display width in CSS pixels; the figure never grows wider than its
        section.  ``None`` uses the image's natural width.
    """

    data: bytes
    alt: str
    caption: str | None = None
    mime: str = "image/png"
    width: int | None = None

    @property
    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass
class Table:
    """A table of already formatted cells.

    Parameters
    ----------
    columns : sequence of str
        Header cells.
    rows : sequence of sequences
        Body cells.  Plain values are converted with ``str`` and escaped;
        :class:`markupsafe.Markup` cells are inserted as they are (build them
        with ``Markup("<b>{}</b>").format(value)``, which escapes ``value``).
    caption : str, default=None
        Plain-text caption above the table.
    collapsible : bool, default=False
        Wrap the table in ``<details>`` so it starts folded.
    summary : str, default=None
        Text of the ``<summary>`` line of a collapsible table (default: the caption).
    align : str, default=None
        One letter per column, ``"l"`` or ``"r"``; default: first column left,
        the others right (numbers).
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str | None = None
    collapsible: bool = False
    summary: str | None = None
    align: str | None = None

    def alignment(self) -> list[str]:
        if self.align is not None:
            if len(self.align) != len(self.columns) or set(self.align) - {"l", "r", "c"}:
                raise InvalidParameterError(
                    f"Table align must have one of 'l', 'r', 'c' per column ({len(self.columns)}); "
                    f"got {self.align!r}.")
            return ["left" if a == "l" else "right" if a == "r" else "center" for a in self.align]
        return ["left"] + ["right"] * (len(self.columns) - 1)


@dataclass
class Section:
    """One titled part of a report.

    Content renders in this order: ``paragraphs``, ``html``, ``images``,
    ``tables``.

    Parameters
    ----------
    title : str
        Heading, also listed in the table of contents.
    paragraphs : sequence of str, default=()
        Plain-text paragraphs (escaped).  :class:`markupsafe.Markup` values are
        inserted as they are.
    html : str, default=""
        A trusted HTML fragment inserted verbatim.  Escape any user-supplied
        value inside it (``markupsafe.escape`` or ``Markup.format``).
    images : sequence of Image, default=()
    tables : sequence of Table, default=()
    anchor : str, default=None
        ``id`` of the section for links (``#anchor``); by default derived from
        the title and made unique within the report.
    """

    title: str
    paragraphs: Sequence[str] = ()
    html: str = ""
    images: Sequence[Image] = ()
    tables: Sequence[Table] = ()
    anchor: str | None = None


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s if s and s[0].isalpha() else f"s-{s}".rstrip("-")


def _png_width(data: bytes) -> int | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">I", data[16:20])[0]
    return None


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("flipguard.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _prepare(sections: Sequence[Section]) -> list[dict[str, Any]]:
    if isinstance(sections, Section):
        sections = [sections]
    out, used = [], set()
    for i, sec in enumerate(sections):
        if not isinstance(sec, Section):
            raise InvalidParameterError(
                f"sections[{i}] must be a flipguard.report.Section; got {type(sec).__name__}.")
        anchor = _slug(sec.anchor or sec.title)
        base, n = anchor, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        images = []
        for img in sec.images:
            if img.mime not in _MIME:
                raise InvalidParameterError(
                    f"Image mime type must be one of {', '.join(sorted(_MIME))}; got {img.mime!r}.")
            width = img.width
            if width is None and img.mime == "image/png":
                width = _png_width(img.data)
            images.append({"src": img.data_uri, "alt": img.alt, "caption": img.caption, "width": width})
        tables = [{"columns": [str(c) for c in t.columns],
                   "rows": [[c if isinstance(c, Markup) else str(c) for c in row] for row in t.rows],
                   "align": t.alignment(), "caption": t.caption, "collapsible": t.collapsible,
                   "summary": t.summary or t.caption or "Details"}
                  for t in sec.tables]
        out.append({"title": sec.title, "anchor": anchor, "paragraphs": list(sec.paragraphs),
                    "html": Markup(sec.html), "images": images, "tables": tables})
    return out


def render_report(sections: Sequence[Section], *, title: str, subtitle: str | None = None) -> str:
    """The report as one self-contained HTML document (a string).

    Parameters
    ----------
    sections : sequence of Section
    title : str
        Page title and main heading (escaped).
    subtitle : str, default=None
        Line under the heading (escaped).

    Returns
    -------
    str
        HTML5 with inline CSS, inline images and no script or network reference.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("flipguard")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        ver = "dev"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    template = _environment().get_template("report.html")
    return template.render(title=str(title), subtitle=subtitle, sections=_prepare(sections),
                           version=ver, generated=generated)


def write_report(path: str | os.PathLike, sections: Sequence[Section], *, title: str,
                 subtitle: str | None = None) -> Path:
    """Write ``sections`` as one self-contained HTML file, atomically.

    Parameters
    ----------
    path : str or path-like
        Output file (``.html``).  Parent directories are created; an existing
        file is replaced in one step, and an error never leaves half a file.
    sections : sequence of Section
        The report's parts, in order (for an assessment:
        :func:`flipguard.report.assessment_sections`).
    title : str
    subtitle : str, default=None

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> from flipguard.report import Section, write_report
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "r.html"
    >>> write_report(out, [Section("Notes", paragraphs=["Hello <world>"])], title="Demo").name
    'r.html'
    >>> "Hello &lt;world&gt;" in out.read_text()
    True
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidParameterError(
            f"Report path {str(path)!r} is a directory; give a file name such as {str(path / 'report.html')!r}.")
    html = render_report(sections, title=title, subtitle=subtitle)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
