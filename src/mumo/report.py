"""Moved to :mod:`mumo.run.report`; this alias stays for one release."""

from mumo.run.report import *  # noqa: F403
from mumo.run.report import write_report  # noqa: F401
