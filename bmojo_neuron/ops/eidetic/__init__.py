"""eidetic op: reference and fast implementations with one signature."""
