"""Metadata as numbers for explanations: the one encoder lives in ``core.metadata``."""

from core.metadata import MISSING, OTHER, EncodedMetadata, encode_metadata, sum_by_source

__all__ = ["MISSING", "OTHER", "EncodedMetadata", "encode_metadata", "sum_by_source"]
