"""Photo libraries: group the faces of people nobody has enrolled (`cluster`), and find a person
everywhere in folders and videos (`siamface find`)."""

from .cluster import DEFAULT_METHOD, METHODS, cluster, threshold_graph
from .metrics import bcubed, pairwise

__all__ = ["DEFAULT_METHOD", "METHODS", "bcubed", "cluster", "pairwise", "threshold_graph"]
