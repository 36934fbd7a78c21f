"""Free-text structure names -> a model's class names (``medfoundry segment --class "left kidney"``).

Resolution, in order: the exact class name; the same words ignoring case, spaces, ``_`` and ``-``
and their order ("left kidney" = ``kidney_left`` = ``left_kidney``); a synonym of
:data:`SYNONYMS` (clinical and lay names, abbreviations); the nearest class name by spelling
(difflib ratio >= :data:`MIN_SIMILARITY`, for typos). Anything else is a one-line error listing the
classes. A small text-embedding model would match looser phrasings, but none ships its weights in a
PyPI package (they download at run time, which this project never does), so the table is the
documented fallback the issue allows; it grows with the label spaces users bring.
"""

from __future__ import annotations

import difflib
import re

from medfoundry import MedfoundryError

MIN_SIMILARITY = 0.8

SYNONYMS: dict[str, tuple[str, ...]] = {
    "liver": ("hepar", "hepatic parenchyma"),
    "spleen": ("lien", "splenic parenchyma"),
    "left kidney": ("kidney l", "l kidney", "lk", "renal left", "left renal"),
    "right kidney": ("kidney r", "r kidney", "rk", "renal right", "right renal"),
    "kidney": ("kidneys", "renal"),
    "hippocampus": ("hippocampi", "hc"),
    "hippocampus anterior": ("hippocampal head", "anterior hippocampus", "hippocampus head"),
    "hippocampus posterior": (
        "hippocampal body and tail",
        "posterior hippocampus",
        "hippocampus tail",
    ),
    "left ventricle": ("lv", "lv cavity", "left ventricular cavity", "lv blood pool"),
    "right ventricle": ("rv", "rv cavity", "right ventricular cavity"),
    "myocardium": ("myo", "lv myocardium", "heart muscle", "left ventricular myocardium"),
    "spinal cord": ("cord", "medulla spinalis"),
    "brain tumour": ("brain tumor", "brain lesion", "glioma"),
    "breast tumour": ("breast tumor", "breast lesion", "breast mass"),
    "tumour edema": ("edema", "oedema", "peritumoral edema", "ed"),
    "tumour enhancing": ("enhancing tumour", "enhancing tumor", "et"),
    "tumour necrosis": ("necrosis", "necrotic core", "ncr"),
    "tumour non enhancing": ("non enhancing tumour", "non enhancing tumor", "net"),
    "gallbladder": ("gall bladder", "cholecyst"),
    "pancreas": ("pancreatic parenchyma",),
    "aorta": ("abdominal aorta",),
}


def words(name: str) -> tuple[str, ...]:
    """The sorted lower-case words of a name (``_``, ``-`` and spaces separate words; British and
    American tumour/tumor and oedema/edema spelt one way)."""
    text = name.lower().replace("tumor", "tumour").replace("oedema", "edema")
    return tuple(sorted(w for w in re.split(r"[\s_\-/]+", text) if w))


def resolve_class(text: str, classes: list[str]) -> str:
    """The class of ``classes`` that ``text`` names (see the module docstring)."""
    if text in classes:
        return text
    by_words = {words(c): c for c in classes}
    if (key := words(text)) in by_words:
        return by_words[key]
    for canonical, alternatives in SYNONYMS.items():
        names = {words(canonical), *(words(a) for a in alternatives)}
        if key in names and words(canonical) in by_words:
            return by_words[words(canonical)]
    spelt = {" ".join(words(c)): c for c in classes}
    near = difflib.get_close_matches(" ".join(key), list(spelt), n=1, cutoff=MIN_SIMILARITY)
    if near:
        return spelt[near[0]]
    raise MedfoundryError(
        f"--class {text!r}: no class of this model by that name or a synonym; it has "
        + ", ".join(classes)
    )
