"""Training: typed config, a readable ``fit()`` loop, self-describing checkpoints, DDP/FSDP."""
