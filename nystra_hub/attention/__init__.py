"""The shared windowed-attention core: geometry, exact paths and PnP-Nystra. Imports no model."""

from .core import (
    ATTN_IMPLS,
    WINDOW_RESIZE_METHODS,
    NystraParams,
    TableBiasWindowAttention,
    WindowAttentionBase,
    attention_modules,
    check_attn_impl,
    register_attn_impl,
    set_attn_impl,
)
from .nystrom import iterative_pinv, landmark_grid, nystrom_attention, pool_bias, pool_tokens, thresholded_exp
from .windows import (
    SHIFT_MASK_VALUE,
    WindowMask,
    log_relative_positions,
    relative_position_index,
    shifted_window_mask,
    sub_window_index,
    to_2tuple,
    window_partition,
    window_reverse,
)

__all__ = [
    "ATTN_IMPLS",
    "NystraParams",
    "TableBiasWindowAttention",
    "WINDOW_RESIZE_METHODS",
    "SHIFT_MASK_VALUE",
    "WindowAttentionBase",
    "WindowMask",
    "attention_modules",
    "check_attn_impl",
    "iterative_pinv",
    "landmark_grid",
    "log_relative_positions",
    "nystrom_attention",
    "pool_bias",
    "pool_tokens",
    "register_attn_impl",
    "relative_position_index",
    "set_attn_impl",
    "shifted_window_mask",
    "sub_window_index",
    "thresholded_exp",
    "to_2tuple",
    "window_partition",
    "window_reverse",
]
