"""Where the committed sample corpus and the notebooks are: a checkout, or a wheel's data files.

In a checkout (an editable install) they are ``data/sample`` and
``notebooks/`` beside the package; a wheel installs them under
``<prefix>/share/ragopt/`` (pyproject's ``data-files``).
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def asset(checkout_path: str, installed_name: str) -> Path:
    """``checkout_path`` in a checkout, else ``share/ragopt/<installed_name>`` of the installation."""
    local = _CHECKOUT / checkout_path
    if local.is_dir():
        return local
    for prefix in (sysconfig.get_path("data"), sys.prefix):
        installed = Path(prefix) / "share" / "ragopt" / installed_name
        if installed.is_dir():
            return installed
    raise FileNotFoundError(f"ragopt's {installed_name} is neither in a checkout ({local}) nor installed under share/ragopt")


def sample_corpus() -> Path:
    """The committed sample corpus (9 documents; sources and licences in data/SOURCES.md)."""
    return asset("data/sample", "sample")


def notebooks_dir() -> Path:
    return asset("notebooks", "notebooks")
