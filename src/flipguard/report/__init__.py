"""Self-contained HTML reports: figures drawn with matplotlib (Agg), pages rendered with jinja2.

A report is a list of :class:`Section` objects written by :func:`write_report`
into one HTML file with inline CSS and inline images (no scripts, no network
references).  :func:`assessment_sections` turns an
:class:`flipguard.assess.Assessment` into sections; other result types add
their own section builders, and sections of several results can share one
report.  This layer reads result objects and computes nothing.

Examples
--------
>>> from flipguard.report import assessment_sections, write_report  # doctest: +SKIP
>>> write_report("report.html", assessment_sections(assessment),
...              title="Impact of label flipping")  # doctest: +SKIP
"""

from ._assessment import assessment_sections, write_assessment_report
from ._figures import figure_to_image
from ._html import Image, Section, Table, render_report, write_report
from ._monitor import monitor_sections, prequential_sections

__all__ = [
    "Image",
    "Section",
    "Table",
    "assessment_sections",
    "figure_to_image",
    "monitor_sections",
    "prequential_sections",
    "render_report",
    "write_assessment_report",
    "write_report",
]
