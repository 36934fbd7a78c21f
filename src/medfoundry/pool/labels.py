"""The global label space and the local -> global remapping table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BACKGROUND = "background"


@dataclass
class LabelSpace:
    """Global class names; the index in ``names`` is the global id and id 0 is background.

    Build it with :meth:`from_label_maps`: ids are given to names in order of first appearance over
    the datasets (in pool order) and, within one dataset, in increasing local id.
    """

    names: list[str] = field(default_factory=lambda: [BACKGROUND])

    @classmethod
    def from_label_maps(cls, label_maps: list[dict[int, str | None]]) -> LabelSpace:
        space = cls()
        for label_map in label_maps:
            for local in sorted(label_map):
                name = label_map[local]
                if name is not None and name not in space.names:
                    space.names.append(name)
        return space

    @classmethod
    def from_dict(cls, labels: dict[str, int]) -> LabelSpace:
        names = [n for n, _ in sorted(labels.items(), key=lambda kv: kv[1])]
        if [labels[n] for n in names] != list(range(len(names))) or names[0] != BACKGROUND:
            raise ValueError("labels must be background=0 followed by consecutive ids")
        return cls(names)

    def to_dict(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def id(self, name: str) -> int:
        return self.names.index(name)

    def local_to_global(self, label_map: dict[int, str | None]) -> dict[int, int]:
        """``{local id: global id}``; a dropped (``null``) label maps to 0."""
        return {
            local: (0 if name is None else self.id(name))
            for local, name in sorted(label_map.items())
        }

    def __len__(self) -> int:
        return len(self.names)


def remap_lut(local_to_global: dict[int, int]) -> np.ndarray:
    """A lookup table ``lut`` with ``lut[local] == global`` (0 -> 0); dtype uint8 or uint16."""
    size = max(local_to_global, default=0) + 1
    top = max(local_to_global.values(), default=0)
    lut = np.zeros(size, dtype=np.uint8 if top < 256 else np.uint16)
    for local, glob in local_to_global.items():
        lut[local] = glob
    return lut


def remap_labels(label_zyx: np.ndarray, local_to_global: dict[int, int]) -> np.ndarray:
    """Map a local label array (any shape, non-negative ints) to global ids with one table lookup.

    Values not in the table must have been rejected by pool validation; here they raise IndexError.
    """
    return remap_lut(local_to_global)[label_zyx]


def invert_map(local_to_global: dict[int, int]) -> dict[int, int]:
    """``{global id: local id}`` for writing predictions back in a dataset's own ids.

    Dropped labels (global 0) are left out; when two local ids share a global class, the smaller wins.
    """
    out: dict[int, int] = {}
    for local, glob in sorted(local_to_global.items()):
        if glob != 0 and glob not in out:
            out[glob] = local
    return out
