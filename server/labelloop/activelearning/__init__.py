"""Next sample: strategies over stored scores, leases that keep annotators apart, double reading."""

from labelloop.activelearning.builtin import BUILTIN_STRATEGIES, FirstStrategy, LastStrategy, RandomStrategy
from labelloop.activelearning.reading import agreement, complete_reads
from labelloop.activelearning.scores import ScoreStore
from labelloop.activelearning.service import ActiveLearning, Lease, reader_tag

__all__ = [
    "BUILTIN_STRATEGIES",
    "ActiveLearning",
    "FirstStrategy",
    "LastStrategy",
    "Lease",
    "RandomStrategy",
    "ScoreStore",
    "agreement",
    "complete_reads",
    "reader_tag",
]
