"""Data side of the harness: synthetic LA-like cases, train/test lists and labeled subsets, loading, augmentation,
the two-stream batch plan and the patch dataset (docs/protocol.md §1.3, §1.6, §3.1, §3.2)."""
