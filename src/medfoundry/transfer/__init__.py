"""Transfer: initialise a model for a new dataset from a pretrained checkpoint, and fine-tune it."""

from medfoundry.transfer.weights import channel_names, transfer_weights

__all__ = ["channel_names", "transfer_weights"]
