"""What the GPU check measures: its datasets (patch, test-case size, stride), method steps, precision variants and
time budgets, for the full check (paper sizes, for a CUDA device) and the quick one (tiny sizes, CPU, CI)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: n/a marker of every figure that needs a CUDA device when the check runs without one.
NO_CUDA = "n/a (no CUDA)"


@dataclass(frozen=True)
class DatasetGeometry:
    """A dataset's sizes as the check uses them.

    Attributes:
        name: the dataset key of the grid (`la`, `pancreas`).
        patch: training patch and sliding window (x, y, z).
        volume: a typical case (x, y, z): the loader crops from it, the sliding window covers it.
        stride: sliding-window stride (x, y, z).
        test_cases: test cases per run (for the projected prediction time).
        augment: the dataset's augmentation mode.
    """

    name: str
    patch: tuple[int, int, int]
    volume: tuple[int, int, int]
    stride: tuple[int, int, int]
    test_cases: int
    augment: str


#: LA: 112 × 112 × 80 patches, test cases about 190 × 135 × 88, stride 18/18/4, 20 test cases (docs/protocol.md).
LA = DatasetGeometry("la", (112, 112, 80), (190, 135, 88), (18, 18, 4), 20, "rotflip_crop")
#: Pancreas: 96³ patches, median case 184 × 146 × 216, stride 16, 20 test cases (docs/protocol.md).
PANCREAS = DatasetGeometry("pancreas", (96, 96, 96), (184, 146, 216), (16, 16, 16), 20, "crop")


@dataclass(frozen=True)
class Variant:
    """One precision and layout setting of a step: `protocol.amp`, `protocol.tf32`, `protocol.channels_last`."""

    amp: str = "off"
    tf32: bool = False
    channels_last: bool = False

    @property
    def name(self) -> str:
        base = "bf16" if self.amp == "bf16" else "tf32" if self.tf32 else "fp32"
        return base + ("+cl" if self.channels_last else "")


FP32 = Variant()
#: fp32 (TF32 off), TF32, bf16 autocast; each with contiguous and channels_last_3d tensors. fp32 comes first: it is
#: the reference's setting, measured before anything else so the time budget never drops it.
VARIANTS = tuple(
    Variant(amp, tf32, cl) for cl in (False, True) for amp, tf32 in (("off", False), ("off", True), ("bf16", False))
)


@dataclass(frozen=True)
class CheckSettings:
    """Sizes, repetitions and budgets of one check.

    Attributes:
        quick: tiny sizes on the CPU (CI), else the paper sizes.
        datasets: the geometries measured.
        n_filters: V-Net width.
        warmup, iterations: untimed and timed training steps per measurement (the median of the timed ones).
        loader_samples: samples the loader delivers per measurement (after its first batch).
        k_values: runs sharing the device in the concurrency measurement.
        k_seconds: how long each of the k processes steps after all are ready.
        k_method: the method the k processes train (its main step, first dataset).
        compile_budget_s: seconds a compile (in its own process) may take before it counts as not compiling.
        budget_s: the whole check's time budget; what does not fit is reported as skipped.
        overrides: method_overrides for the step builds (the quick check shrinks sup_local_contrast's stages).
        variant_methods: methods measured under every variant (None: all; the others in the grid's precision only).
        compile_cases: how many steps are compiled (None: all, as the budget allows).
        loader_methods: methods whose loader is measured (None: all).
    """

    quick: bool
    datasets: tuple[DatasetGeometry, ...]
    n_filters: int
    warmup: int
    iterations: int
    loader_samples: int
    k_values: tuple[int, ...]
    k_seconds: float
    k_method: str
    compile_budget_s: float
    budget_s: float
    overrides: dict[str, dict] = field(default_factory=dict)
    variant_methods: tuple[str, ...] | None = None
    compile_cases: int | None = None
    loader_methods: tuple[str, ...] | None = None


def full_settings() -> CheckSettings:
    """The paper sizes (n_filters 16, batch 2 + 2) for one CUDA device, in about 7 minutes."""
    return CheckSettings(
        quick=False,
        datasets=(LA, PANCREAS),
        n_filters=16,
        warmup=3,
        iterations=10,
        loader_samples=48,
        k_values=(1, 2, 3),
        k_seconds=15.0,
        k_method="simcvd",
        compile_budget_s=120.0,
        budget_s=420.0,
    )


def quick_settings() -> CheckSettings:
    """Tiny sizes on the CPU: the same code and report in well under a minute (the tests and CI)."""
    tiny_la = DatasetGeometry("la", (16, 16, 16), (20, 18, 18), (16, 16, 8), 2, "rotflip_crop")
    tiny_pancreas = DatasetGeometry("pancreas", (16, 16, 16), (24, 20, 18), (16, 16, 16), 2, "crop")
    overrides = {"sup_local_contrast": {"stage1": {"batch_volumes": 2}, "stage2": {"stride": 4}}}
    return CheckSettings(
        quick=True,
        datasets=(tiny_la, tiny_pancreas),
        n_filters=2,
        warmup=1,
        iterations=2,
        loader_samples=4,
        k_values=(1, 2, 3),
        k_seconds=1.0,
        k_method="supervised",
        compile_budget_s=1.0,
        budget_s=50.0,
        overrides=overrides,
        variant_methods=("supervised",),
        compile_cases=1,
        loader_methods=("supervised", "dtc"),
    )
