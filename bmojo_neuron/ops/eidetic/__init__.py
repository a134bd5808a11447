"""eidetic ops (``eidetic_select``, ``gather_rows``): reference and fast implementations with one signature.

- :mod:`.reference`: readable loops over chunks (``*_reference``);
- :mod:`.vectorized`: the same in batched top-k merges and one gather (``*_vectorized``), the math under
- :mod:`.custom_op`: the ``bmojo::`` custom ops the dispatcher's ``torch`` mode calls (``*_torch``);
- :mod:`.priority`: the retention priority, shared with the cached decoding paths.
"""

from .priority import POLICIES, fifo_priority, priority

__all__ = ["POLICIES", "fifo_priority", "priority"]
