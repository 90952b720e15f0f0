"""The web UI: pages over the lineage graph, each with a JSON twin (imports graph and alerts only)."""
