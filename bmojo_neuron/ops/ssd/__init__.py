"""ssd ops (``ssd_scan``, ``ssd_step``): reference and fast implementations with one signature.

- :mod:`.reference`: the sequential scan, step by step (``ssd_scan_reference``);
- :mod:`.chunked`: the chunked scan and its explicit backward (``ssd_scan_chunked``), the math under
- :mod:`.custom_op`: the ``bmojo::ssd_scan`` custom op the dispatcher's ``torch`` mode calls (``ssd_scan_torch``);
- :mod:`.recurrent`: one token of the recurrence, for decoding (``ssd_step``).
"""
