"""The modality / channel names a pool knows, compared case-insensitively.

Planning normalises a channel named ``CT`` with CT clipping and every other channel with a z-score
(see :func:`medfoundry.planning.plan.make_plan`), so a typo of ``CT`` silently changes the
preprocessing. A modality written in the pool file must therefore be one of these names; a free
channel name read from an nnU-Net ``dataset.json`` is kept, with a warning.
"""

from __future__ import annotations

import logging

from medfoundry import MedfoundryError

log = logging.getLogger(__name__)

MODALITY_NAMES: dict[str, tuple[str, ...]] = {
    "CT": ("CT",),
    "MR": (
        "MR",
        "MRI",
        "T1",
        "T1w",
        "T1c",
        "T1ce",
        "T1gd",
        "T1post",
        "T2",
        "T2w",
        "T2star",
        "FLAIR",
        "ADC",
        "DWI",
        "PD",
        "PDw",
        "SWI",
        "DCE",
        "cine",
    ),
    "PET": ("PET", "PT"),
    "US": ("US",),
}
"""Family -> the names that mean it (DICOM codes, MSD / nnU-Net / BraTS spellings)."""

_KNOWN = {n.upper() for names in MODALITY_NAMES.values() for n in names}


def is_known_modality(name: object) -> bool:
    """True when ``name`` is a string naming a known modality (any case, surrounding spaces ignored)."""
    return isinstance(name, str) and name.strip().upper() in _KNOWN


def known_names() -> str:
    """The known names, comma-separated, for messages."""
    return ", ".join(n for names in MODALITY_NAMES.values() for n in names)


def check_modality(name: object, where: str) -> str:
    """``name`` if it is a known modality; else a one-line error naming ``where`` and listing them."""
    if not is_known_modality(name):
        raise MedfoundryError(
            f"{where}: unknown modality {name!r} (known, any case: {known_names()})"
        )
    return str(name)


def warn_unknown_channels(names: list[str], where: str) -> None:
    """Log one warning per channel name (read from a ``dataset.json``) that is not a known modality."""
    for name in names:
        if not is_known_modality(name):
            log.warning(
                "%s: channel name %r is not a known modality; it will be z-score normalised "
                "(known, any case: %s)",
                where,
                name,
                known_names(),
            )
