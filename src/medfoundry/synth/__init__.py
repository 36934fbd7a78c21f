"""Built-in synthetic phantom datasets: the embedded default data for machines without real data."""

from medfoundry.synth.datasets import SYNTH_DATASETS, write_synthetic_datasets
from medfoundry.synth.phantom import make_phantom

__all__ = ["SYNTH_DATASETS", "make_phantom", "write_synthetic_datasets"]
