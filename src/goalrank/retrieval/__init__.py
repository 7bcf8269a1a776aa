"""The MF retriever producing each user's candidate items (paper §4.1.1)."""

from goalrank.retrieval.mf import MatrixFactorization, RetrieverConfig, train_bpr
from goalrank.retrieval.search import retrieve

__all__ = ["MatrixFactorization", "RetrieverConfig", "retrieve", "train_bpr"]
