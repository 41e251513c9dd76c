# The benchmark DAG: prepare data -> resolve each run's config -> train -> predict -> evaluate -> tables and figures.
# Default: the paper benchmark of config/config.yaml. Smoke run: `snakemake --cores all --configfile config/smoke.yaml`.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# With --configfile, that file alone is the config (the paper grid is not merged into it).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        report_targets(),
