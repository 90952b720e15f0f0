"""A loopback Hugging Face Hub stand-in for tests, benchmarks and the offline demo (standard library only)."""

from hubsim.repos import SimFile, SimRepo, files_of
from hubsim.server import Fault, HubSim

__all__ = ["Fault", "HubSim", "SimFile", "SimRepo", "files_of"]
