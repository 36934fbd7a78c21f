"""The fine-tuning recipe: what ``medfoundry finetune``, the main job and the few-shot benchmark change
in a training config when the weights come from a pretrained model.

Chosen by measurement (``medfoundry benchmark fewshot --preset fewshot_recipes``; the comparison is in
the README's transfer section), not assumed.
"""

from __future__ import annotations

FINETUNE_RECIPE: tuple[str, ...] = ("init_groups=[stem, encoder, bottleneck]",)
"""``--set`` overrides applied before the user's own: load the pretrained stem, encoder and
Transformer bottleneck; the decoder and the head start anew and everything trains at one rate.

The comparison (hippocampus, 4 labelled cases, 3 seeded subsets, tsfm_test, 300 steps after 600
pretraining steps, 2-core AMD EPYC, bf16; mean validation Dice over the supervised, ssl and both
starts): this recipe 0.674; the new head alone for the first 30 steps 0.616; everything loaded at
one rate 0.600; layer-wise decay 0.5 0.529; the body at a tenth of the head's rate 0.306 (scratch:
0.719). Slowing the pretrained body hurt every start, and the pretrained decoder hurt most: these
short CPU pretrainings give encoder features worth keeping, not a decoder. Rule fixed before the
runs: the highest mean over the three pretrained starts."""
