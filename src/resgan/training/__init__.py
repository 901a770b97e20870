"""The per-worker training loop (Ray-free), checkpoints, and the Ray Train driver."""
