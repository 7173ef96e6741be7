"""Structure datasets (Å, eV as stored): records, batching, and readers for the formats users hold."""

from cvlearn.datasets.structures import GraphBatch, Structure, bounded_batches, collate

__all__ = ["GraphBatch", "Structure", "bounded_batches", "collate"]
