"""Data in: tables from files, URLs, databases and memory -> :class:`LabeledDataset`."""

from ._dataset import LabeledDataset
from ._load import dropped_text_columns, encode_labels, from_table, load
from ._partitioned import Partition, PartitionedDataset, discover, is_partitioned
from ._postgres import pg_snapshot, read_postgres
from ._read import read_table, write_table
from ._synthetic import make_sentiment_reviews

__all__ = [
    "LabeledDataset",
    "Partition",
    "PartitionedDataset",
    "discover",
    "dropped_text_columns",
    "encode_labels",
    "from_table",
    "is_partitioned",
    "load",
    "make_sentiment_reviews",
    "pg_snapshot",
    "read_postgres",
    "read_table",
    "write_table",
]
