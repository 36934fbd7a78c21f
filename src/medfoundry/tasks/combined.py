"""Supervised and self-supervised together (``--objective both``): the partial-label segmentation
loss on labelled patches and masked-volume modelling on every patch, labelled or not, by turns.

Step ``s`` trains on a segmentation batch when ``s`` is even and on a masked batch when it is odd
(segmentation batch ``s // 2``, masked batch ``s // 2``), so each objective gets half of the steps,
at one forward pass per step, and a resumed run draws exactly the batches it would have. The network
has both heads (a ``concat`` head: segmentation channels, then the reconstruction channels), so the
model predicts labels as a segmentation model does (decoding reads the class channels by name) and
fine-tunes like one. Validation is segmentation's (Dice on labelled cases).
"""

from __future__ import annotations

from collections.abc import Iterator

from medfoundry import MedfoundryError
from medfoundry.tasks.base import BatchSource, OutputSpec, Shard
from medfoundry.tasks.masked import MaskedVolumeTask
from medfoundry.tasks.segmentation import SegmentationTask


class CombinedTask:
    name = "segmentation+masked"
    batch_keys = ("image", "label", "valid", "target", "mask")
    metric_name = "mean Dice"
    prompt_channels = 0

    def __init__(self, seg: SegmentationTask, ssl: MaskedVolumeTask) -> None:
        self.seg, self.ssl = seg, ssl
        self.num_seg = len(seg.outputs.channels)
        channels = seg.outputs.channels + ssl.outputs.channels
        self.outputs = OutputSpec(seg.outputs.activation, channels)

    @classmethod
    def from_config(cls, cfg, labels: dict[str, int], in_channels: int = 1) -> CombinedTask:
        if cfg.deep_supervision:
            raise MedfoundryError("--objective both does not take deep_supervision=true")
        seg = SegmentationTask.from_config(cfg, labels, in_channels)
        return cls(seg, MaskedVolumeTask(in_channels, seg.num_fg))

    @classmethod
    def from_description(cls, d: dict, labels: dict[str, int], head: dict) -> CombinedTask:
        seg_head, ssl_head = head["parts"]
        outputs = OutputSpec.from_json(d["outputs"])
        seg_channels = outputs.channels[: seg_head["num_outputs"]]
        seg = SegmentationTask(labels, outputs.activation, False, seg_channels)
        ssl = MaskedVolumeTask(ssl_head["num_outputs"], seg.num_fg, d.get("mask_ratio", 0.6))
        return cls(seg, ssl)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "outputs": self.outputs.to_json(),
            "mask_ratio": self.ssl.mask_ratio,
        }

    def head(self) -> dict:
        return {"kind": "concat", "parts": [self.seg.head(), self.ssl.head()]}

    def train_batches(self, src: BatchSource, start_step: int, shard: Shard) -> Iterator[dict]:
        """Segmentation and masked batches by turns, from step ``start_step``."""
        seg = self.seg.train_batches(src, (start_step + 1) // 2, shard)
        ssl = self.ssl.train_batches(src, start_step // 2, shard)
        step = start_step
        while True:
            yield next(seg) if step % 2 == 0 else next(ssl)
            step += 1

    def validation_batches(self, src: BatchSource, shard: Shard = (0, 1)) -> Iterator[dict]:
        return self.seg.validation_batches(src, shard)

    def validation_volumes(self, src: BatchSource, shard: Shard = (0, 1)):
        return self.seg.validation_volumes(src, shard)

    def loss(self, outputs, batch: dict):
        """The batch's objective on its head's channels of ``outputs`` ``(B, K + C, Z, Y, X)``."""
        if "mask" in batch:
            return self.ssl.loss(outputs[:, self.num_seg :], batch)
        return self.seg.loss(outputs[:, : self.num_seg], batch)

    def decode(self, logits, classes: list[str]):
        return self.seg.decode(logits, classes)

    def new_metric(self, pooled: bool):
        return self.seg.new_metric(pooled)

    def update_metric(self, metric, outputs, batch: dict) -> None:
        self.seg.update_metric(metric, outputs, batch)
