"""Transfer: initialise a model for a new dataset from a pretrained checkpoint, and fine-tune it."""

from medfoundry.transfer.weights import transfer_weights

__all__ = ["transfer_weights"]
