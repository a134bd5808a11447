"""NKI kernels for B'MOJO (chunked SSD scan, eidetic select / gather) and the CPU interpreter that runs them."""
