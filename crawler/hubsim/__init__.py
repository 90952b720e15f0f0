"""A loopback Hugging Face Hub stand-in for tests, benchmarks and the offline demo."""

from crawler.hubsim.repos import SimFile, SimRepo, files_of
from crawler.hubsim.server import Fault, HubSim
from crawler.hubsim.zoo import populate

__all__ = ["Fault", "HubSim", "SimFile", "SimRepo", "files_of", "populate"]
