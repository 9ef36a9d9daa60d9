"""nystra_hub: pretrained window-transformer restoration models with exact and PnP-Nystra attention.

``import nystra_hub`` registers the models with transformers' Auto classes and timm's registry when those
libraries are installed; building and loading models needs neither.
"""

from .attention import ATTN_IMPLS, NystraParams
from .checkpoints import CheckpointError, CheckpointMismatchError, load_original_checkpoint, read_state_dict
from .models import ARCHITECTURES, RestorationModel, build_model

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "ATTN_IMPLS",
    "CheckpointError",
    "CheckpointMismatchError",
    "NystraParams",
    "RestorationModel",
    "build_model",
    "load_original_checkpoint",
    "read_state_dict",
]
