"""`bargein bench`: the benchmark. `run.py` is the entry point and the report's data; each mode has a module."""
