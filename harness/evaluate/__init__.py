"""Test-set prediction with the sliding window, the predictions' record, and per-case metrics."""
