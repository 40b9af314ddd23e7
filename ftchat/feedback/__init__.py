"""Human feedback: ratings stored while chatting (store), exported as training data (export), ranked (leaderboard),
and turned into the next training round (rounds)."""

from .store import FeedbackError, FeedbackStore, ImportProblem, ImportReport, model_name, weights_hash

__all__ = ["FeedbackStore", "FeedbackError", "ImportReport", "ImportProblem", "model_name", "weights_hash"]
