"""Reporting kit (layer 0, beside errors, config, vocab and files): what every report records the same way —
environment, memory, files, plots.

Every report carries ``environment`` (device, versions, commit) from :func:`environment`, so numbers from different
machines or code are never compared by accident; JSON is written by :func:`write_json` (NaN becomes ``null``, ±inf ``"inf"``/``"-inf"``),
Markdown tables by :func:`markdown_table`, plots by :mod:`speechtrt.reporting.plots`.
"""

from speechtrt.reporting.env import commit_label, device_info, environment, git_commit, versions
from speechtrt.reporting.io import check_writable, markdown_table, write_json, write_text
from speechtrt.reporting.memory import UsageSampler, peak_rss_mb, rss_mb

__all__ = [
    "UsageSampler", "check_writable", "commit_label", "device_info", "environment", "git_commit", "markdown_table",
    "peak_rss_mb", "rss_mb", "versions", "write_json", "write_text",
]
