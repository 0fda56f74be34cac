"""Next sample: strategies over stored scores, leases that keep annotators apart, double reading."""

from labelloop.activelearning.builtin import BUILTIN_STRATEGIES, FirstStrategy, LastStrategy, RandomStrategy
from labelloop.activelearning.leases import Lease, LeaseBook, Skip
from labelloop.activelearning.progress import HolderWork, lease_progress
from labelloop.activelearning.reading import READ_PREFIX, ReadsOutcome, agreement, complete_reads, reader_tag
from labelloop.activelearning.scores import ScoreStore
from labelloop.activelearning.service import ActiveLearning, Handout, RankEntry

__all__ = [
    "BUILTIN_STRATEGIES",
    "ActiveLearning",
    "FirstStrategy",
    "Handout",
    "HolderWork",
    "LastStrategy",
    "Lease",
    "LeaseBook",
    "Skip",
    "READ_PREFIX",
    "RandomStrategy",
    "RankEntry",
    "ReadsOutcome",
    "ScoreStore",
    "agreement",
    "complete_reads",
    "lease_progress",
    "reader_tag",
]
