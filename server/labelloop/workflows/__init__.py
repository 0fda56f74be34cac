"""User actions that cross services, each in one place and atomic where the database allows.

Routers call these instead of calling several services in a row; services never call them.
"""

from labelloop.workflows.label_save import LabelSave, LabelSaved, save_label
from labelloop.workflows.model_activation import activate_version, publish_upload
from labelloop.workflows.pacs_stow import StowedSeg, save_stowed_segs
from labelloop.workflows.progress import AnnotatorProgress, LabellingProgress, labelling_progress

__all__ = [
    "AnnotatorProgress",
    "LabelSave",
    "LabelSaved",
    "LabellingProgress",
    "StowedSeg",
    "activate_version",
    "labelling_progress",
    "publish_upload",
    "save_label",
    "save_stowed_segs",
]
