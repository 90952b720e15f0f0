"""A loopback Hugging Face Hub stand-in for tests, benchmarks and the offline demo (standard library only)."""

from hubsim.hub import Chaos, Fault
from hubsim.repos import SimFile, SimRepo, files_of
from hubsim.server import HubSim

__all__ = ["Chaos", "Fault", "HubSim", "SimFile", "SimRepo", "files_of"]
