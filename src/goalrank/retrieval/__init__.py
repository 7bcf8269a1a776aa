"""The MF retriever producing each user's candidate items (paper §4.1.1)."""

from goalrank.retrieval.mf import MatrixFactorization, RetrieverConfig, train_bpr

__all__ = ["MatrixFactorization", "RetrieverConfig", "train_bpr"]
