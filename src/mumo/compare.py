"""Moved to :mod:`mumo.run.compare`; this alias stays for one release."""

from mumo.run.compare import *  # noqa: F403
from mumo.run.compare import compare, format_table  # noqa: F401
