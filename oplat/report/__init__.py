"""Reports: how every command shows what it measured or predicted.

One module per kind of report, shared by the commands and by the HTML review pages:
:mod:`~oplat.report.tables` (latency tables), :mod:`~oplat.report.prediction` (a
network's predicted latency and per-kernel breakdown), :mod:`~oplat.report.validation`
(predicted vs measured networks), :mod:`~oplat.report.search` (``oplat search``'s
``report.md`` and ``pareto.csv``). :mod:`~oplat.report.provenance` says where the numbers
came from: device, runtime, host, threads, when the table was measured, the statistic.
Reports take records in and return text; writing files is the caller's business.

:mod:`~oplat.report.figures` draws the figures (matplotlib, the optional ``report``
extra, imported lazily: plain data in, a ``Figure`` out, no pyplot) and
:mod:`~oplat.report.html` builds self-contained HTML: review-table documents and the
review pages of ``oplat report`` and ``oplat predict --html`` (provenance, figures as
embedded PNG with an SVG beside the page, tables), whose ``write`` is the one place a
report writes files itself.
"""
