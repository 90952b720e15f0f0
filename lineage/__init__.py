"""The ``lineage`` command, its settings, and the pipeline that joins the packages."""

__version__ = "0.1.0"
