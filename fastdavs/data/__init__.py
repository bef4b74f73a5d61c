"""Data: the SynthLRW generator, LRW-layout reading (PyAV), face alignment, packed shards and
the training Dataset. See DESIGN.md (Data) and spec/davs.md §3."""
