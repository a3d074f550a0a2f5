"""What every capability shares: params, errors, the verified artifact format, run layout, file I/O,
progress, MLflow tracking, provenance and the stage-reads table."""
