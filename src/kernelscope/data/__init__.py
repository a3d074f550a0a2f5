"""Data sets: the bundled digits, users' sources read by one reader per format (``readers``), the
train/test split as a verified Parquet artifact, and class hierarchies."""
