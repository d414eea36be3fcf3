"""Reports: how every command shows what it measured or predicted.

One module per kind of report, shared by the commands (and by the HTML pages to come):
:mod:`~oplat.report.tables` (latency tables), :mod:`~oplat.report.prediction` (a
network's predicted latency and per-kernel breakdown), :mod:`~oplat.report.validation`
(predicted vs measured networks). :mod:`~oplat.report.provenance` says where the numbers
came from: device, runtime, host, threads, when the table was measured, the statistic.
Reports take records in and return text; writing files is the caller's business.
"""
