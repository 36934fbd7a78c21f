"""Tasks on the TSFM backbone (see :mod:`medfoundry.tasks.base` for the seam every task fills)."""

from medfoundry import MedfoundryError
from medfoundry.tasks.base import BatchSource, OutputSpec, Task
from medfoundry.tasks.classification import ClassificationTask
from medfoundry.tasks.combined import CombinedTask
from medfoundry.tasks.masked import MaskedVolumeTask
from medfoundry.tasks.promptable import PromptableTask
from medfoundry.tasks.segmentation import SegmentationTask, channel_names

TASKS = {
    "segmentation": SegmentationTask,
    "masked": MaskedVolumeTask,
    "segmentation+masked": CombinedTask,
    "promptable": PromptableTask,
    "classification": ClassificationTask,
    "classification-multilabel": ClassificationTask,
}


def task_from_config(cfg, labels: dict[str, int], in_channels: int = 1) -> Task:
    """The task a :class:`~medfoundry.training.config.TrainConfig` trains, over a label space, for
    a network reading ``in_channels`` channels."""
    return TASKS[cfg.task].from_config(cfg, labels, in_channels)


def task_from_description(description: dict) -> Task:
    """The task a checkpoint or model file describes (its ``task``, ``labels`` and model ``head``)."""
    d = description["task"]
    if d.get("name") not in TASKS:
        raise MedfoundryError(
            f"the model's task '{d.get('name')}' is not one of this version's ({', '.join(TASKS)})"
        )
    return TASKS[d["name"]].from_description(d, description["labels"], description["model"]["head"])


__all__ = [
    "TASKS",
    "BatchSource",
    "ClassificationTask",
    "CombinedTask",
    "MaskedVolumeTask",
    "OutputSpec",
    "PromptableTask",
    "SegmentationTask",
    "Task",
    "channel_names",
    "task_from_config",
    "task_from_description",
]
