"""Hub crawler: discovery, metadata, and ranged reads of the tensors a fingerprint needs."""
