"""Minimal Hub-format test doubles of model families that ship their own code.

Each reproduces the interface quirks of the real family's Hub code that a loader must cope
with (not its science): a config without `hidden_size`, a `forward` without `attention_mask`,
tuple outputs without `hidden_states`, buffers built in `__init__` that break under meta-device
initialisation, classes registered on import instead of through `auto_map`. Written for
these tests; no third-party model code.
"""
