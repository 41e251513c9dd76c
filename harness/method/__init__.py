"""The method contract: what a method file implements and may rely on, and the registry of methods.

Method files import from here (`from harness.method import Batch, Method, register_method, ...`).
"""

from harness.method.contract import (
    STAGE_DATA,
    STAGE_OPTIMIZERS,
    STAGE_SCHEDULES,
    Batch,
    BuildNet,
    Method,
    Progress,
    Stage,
    StageSpec,
    StepOutput,
    main_stage,
)
from harness.method.registry import get_method, list_methods, register_method

__all__ = [
    "STAGE_DATA",
    "STAGE_OPTIMIZERS",
    "STAGE_SCHEDULES",
    "Batch",
    "BuildNet",
    "Method",
    "Progress",
    "Stage",
    "StageSpec",
    "StepOutput",
    "get_method",
    "main_stage",
    "list_methods",
    "register_method",
]
