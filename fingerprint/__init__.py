"""Weight fingerprints: lazy checkpoint I/O, canonical views, and lineage similarity.

Imports nothing from the project's other packages.
"""
