"""The synthetic model zoo: real (tiny) trained families with known lineage, built offline on CPU."""
