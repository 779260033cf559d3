"""Operations: the inbox and automation sensors, the nightly rebuild, failed-shard backfills, the local instance."""
