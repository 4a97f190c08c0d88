"""Data: sources, the document format, preparation into shards, packing and the loader."""
