"""The ground-truth user-response simulator (`goalrank simulate`) and the built-in default data.

``simulator`` holds the world, the exact list-wise response model and its oracles (best list,
oracle policy of paper Eq. 2); ``logs`` holds the logging policy that writes interactions.parquet.
"""

from goalrank.simulate.simulator import SimConfig, Simulator, World, simulate

__all__ = ["SimConfig", "Simulator", "World", "simulate"]
