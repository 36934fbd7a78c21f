"""Training: typed config, what a run is made of (setup), its state, one step, validation, the
``fit()`` loop, freeze policies, optimiser and schedule, and PyTorch's distributed engine."""
