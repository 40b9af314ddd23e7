"""Human feedback: ratings stored while chatting (store, the only module that talks to the database; session), ratings
from elsewhere (imports), ratings as training data (export), rankings (leaderboard), a reward model's judgement
(judge), prompts to rate (prompt_queue), prompts shared out among raters (tasks) and the next training round
(rounds)."""

from .store import FeedbackError, FeedbackStore

__all__ = ["FeedbackStore", "FeedbackError"]
