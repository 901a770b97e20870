"""Feature extractors, real-data statistics and FID (no Ray, no MLflow here)."""
