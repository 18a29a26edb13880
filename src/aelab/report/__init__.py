"""The report of a run: ``report.html`` (one self-contained page) and the tables it and the Markdown files share."""

from .page import write_report
from .tables import html_table, markdown_table

__all__ = ["write_report", "html_table", "markdown_table"]
