"""The replay buffer: sample schema, crash-safe parquet shards, eviction, batches, export."""
