"""Lazy, bounded readers for checkpoint files (safetensors, GGUF) over byte sources."""
