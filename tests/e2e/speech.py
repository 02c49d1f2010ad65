"""What the end-to-end tests speak: the long greeting a caller talks over, and synthesised speech trimmed to its
sound."""

from __future__ import annotations

from typing import Any

import numpy as np

GREETING = (
    "Thanks for calling. This is a long announcement that keeps the agent talking for a while. "
    "Our opening hours are nine to five on weekdays, and ten to two on Saturdays. "
    "You can ask about an order, a delivery or a refund, and I will do my best to help you with it."
)


def trimmed(pcm: Any) -> Any:
    """Speech without the synthesiser's leading and trailing silence (so a pause is as long as the test says)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    return pcm[loud[0]:loud[-1] + 1] if len(loud) else pcm
