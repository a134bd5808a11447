"""attention op (``bmojo_attention``): reference and fast implementations with one signature.

- :mod:`.reference`: dense masks over the whole sequence (``bmojo_attention_reference``);
- :mod:`.blocked`: query blocks against the keys they can see (``bmojo_attention_torch``, plain torch that
  compiles as is, so no custom op: the dispatcher's ``torch`` mode calls it directly).
"""
