"""Structure datasets (Å, eV as stored): records, batching, and readers for the formats users hold.

Splits of structure sets (``random_split``, ``temporal_split``, ``split_structures``) live in
``cvlearn.data.splits``, with the trajectory splits.
"""

from cvlearn.structures.extxyz import ExtxyzFormatError, MissingLabelError, read_extxyz, write_extxyz
from cvlearn.structures.sdf import SDFFormatError, read_sdf
from cvlearn.structures.records import GraphBatch, Structure, bounded_batches, collate
from cvlearn.structures.frames import trajectory_structures
from cvlearn.structures.xxmd import list_xxmd_splits, load_xxmd, write_xxmd

__all__ = ["GraphBatch", "Structure", "bounded_batches", "collate", "ExtxyzFormatError", "MissingLabelError",
           "read_extxyz", "write_extxyz", "SDFFormatError", "read_sdf", "trajectory_structures", "list_xxmd_splits",
           "load_xxmd", "write_xxmd"]
