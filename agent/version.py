"""The waypost version string (layer 0), read from the installed distribution when present."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("waypost")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.1.0"
