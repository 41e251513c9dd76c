# The benchmark DAG: prepare data -> resolve each run's config -> train -> predict -> evaluate -> tables and figures.
# Default: the paper benchmark of config/config.yaml. Smoke run: `snakemake --cores all --configfile config/smoke.yaml`.
import sys

from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, workflow.basedir)
from harness.config import ConfigError  # noqa: E402
from harness.workflow.validate import load_config_file  # noqa: E402


report: "workflow/report/workflow.rst"


# With --configfile, that file alone is the config (the paper grid is not merged into it).
if not workflow.overwrite_configfiles:
    # Snakemake's own loader names no line on a YAML syntax error; load_config_file does (file, line, column).
    try:
        load_config_file("config/config.yaml")
    except ConfigError as err:
        raise WorkflowError(f"config refused: {err}") from None

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        TARGETS.all(with_cost=bool(cost_inputs())),
