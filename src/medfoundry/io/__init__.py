"""Files <-> one :class:`Volume` type. See :mod:`medfoundry.io.volume` for the axis contract."""

from medfoundry.io.readers import VolumeReadError, read_image, read_label, read_volume
from medfoundry.io.volume import AXES, Volume
from medfoundry.io.writers import write_volume

__all__ = [
    "AXES",
    "Volume",
    "VolumeReadError",
    "read_image",
    "read_label",
    "read_volume",
    "write_volume",
]
