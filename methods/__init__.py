"""Every method of the benchmark, one module each; importing this package registers them (DESIGN.md §2)."""

from . import cvrl, dtc, mean_teacher, simcvd, sup_local_contrast, supervised, ua_mt  # noqa: F401
