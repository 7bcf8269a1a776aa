"""The ground-truth user-response simulator (`goalrank simulate`) and the built-in default data.

``simulator`` holds the world, the exact list-wise response model and its oracles (best list,
oracle policy of paper Eq. 2); ``logs`` holds the logging policy and ``simulate``, which writes a
``folder.SimulatorFolder``.
"""

from goalrank.simulate.logs import simulate
from goalrank.simulate.simulator import SimConfig, Simulator, World

__all__ = ["SimConfig", "Simulator", "World", "simulate"]
