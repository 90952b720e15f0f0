"""Lineage similarity: CKA, residual-stream alignment, and the AWM / lineage / HuRef / REEF methods."""
