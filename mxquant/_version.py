"""The installed distribution's version (package metadata), for the face and the reports."""

from importlib import metadata

try:
    __version__ = metadata.version("mxquant")
except metadata.PackageNotFoundError:  # imported from a tree that was never installed
    __version__ = "0+unknown"
