"""Model family and size ladder. Importing this package does not import torch."""

from medfoundry.models.sizes import MODEL_SIZES, ModelSize, get_size

__all__ = ["MODEL_SIZES", "ModelSize", "get_size"]
