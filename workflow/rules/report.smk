# Results: paper-style tables with the published comparison and statistics, summary.json (DVC metrics), seaborn
# figures, qualitative overlays, the protocol-sensitivity table (from saved predictions), the provenance page and,
# when the per-run rules declare `benchmark:`, the cost table. Outputs flagged with report() form
# `snakemake --report report.html` (docs/reporting.md). Every rule takes the `barrier` of the runs it reads (their
# journals and metrics, harness.run.lineage): a job of those runs that started and did not finish makes it rerun.


rule aggregate:
    input:
        csv=PLAN.run_files("metrics_per_case.csv"),
        barrier=PLAN.barrier(),
    output:
        TARGETS.result_tables(),
        html=TARGETS.result_tables_html(),
        runs=f"{PLAN.bench}/runs.csv",
        summary=f"{PLAN.bench}/summary.json",
    log:
        f"{PLAN.bench}/logs/aggregate.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("report-tables"),
        name=PLAN.name,
        published=config["report"]["published_source"],
        reference=config["report"]["reference_method"],
        samples=config["report"]["bootstrap_samples"],
        seed=config["report"]["bootstrap_seed"],
        alternative=config["report"]["test_alternative"],
    shell:
        "python -m harness --code-sha256 {params.code} report-tables"
        " --name {params.name} --out $(dirname {output.summary})"
        " --published-source {params.published} --reference {params.reference}"
        " --bootstrap-samples {params.samples} --bootstrap-seed {params.seed} --alternative {params.alternative}"
        " --inputs {input.csv} > {log} 2>&1"


rule figures:
    input:
        csv=PLAN.run_files("metrics_per_case.csv"),
        run_info=PLAN.run_files("run_info.json"),
        barrier=PLAN.barrier(),
    output:
        figures=TARGETS.figure_files(),
    log:
        f"{PLAN.bench}/logs/figures.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("report-figures"),
        out=lambda wildcards, output: Path(output[0]).parent,
        published=config["report"]["published_source"],
    shell:
        "python -m harness --code-sha256 {params.code} report-figures"
        " --out {params.out} --published-source {params.published}"
        " --inputs {input.csv} --run-info {input.run_info} > {log} 2>&1"


rule qualitative:
    input:
        run_configs=dataset_runs("run_config.yaml", first_seed=True),
        predictions=dataset_runs("predictions", first_seed=True),
        data=DATA.manifest,
        barrier=dataset_barrier(first_seed=True),
    output:
        png=report(
            f"{TARGETS.figures}/qualitative_{{dataset}}.png",
            caption="../report/qualitative.rst",
            category="Qualitative",
            labels={"dataset": "{dataset}"},
        ),
        pdf=f"{TARGETS.figures}/qualitative_{{dataset}}.pdf",
    log:
        f"{PLAN.bench}/logs/qualitative_{{dataset}}.log",
    conda:
        "../../environment.yml"
    params:
        code=code("qualitative"),
        case=lambda wildcards: config["report"]["qualitative_cases"].get(wildcards.dataset, ""),
        slices=config["report"]["qualitative_slices"],
    shell:
        "python -m harness --code-sha256 {params.code} qualitative"
        " --run-configs {input.run_configs} --out {output.png}"
        " --case={params.case:q} --slices {params.slices} > {log} 2>&1"


rule sensitivity:
    input:
        run_configs=dataset_runs("run_config.yaml"),
        predictions=dataset_runs("predictions"),
        run_info=dataset_runs("run_info.json"),
        data=DATA.manifest,
        barrier=dataset_barrier(),
    output:
        csv=f"{PLAN.bench}/sensitivity/{{dataset}}_per_case.csv",
        tables=multiext(f"{TARGETS.tables}/{{dataset}}_sensitivity.", "md", "csv", "tex"),
        html=report(
            f"{TARGETS.tables}/{{dataset}}_sensitivity.html",
            caption="../report/sensitivity.rst",
            category="Protocol sensitivity",
            labels={"dataset": "{dataset}"},
        ),
    log:
        f"{PLAN.bench}/logs/sensitivity_{{dataset}}.log",
    conda:
        "../../environment.yml"
    threads: 4
    params:
        code=code("sensitivity"),
        spacing=DATA.eval_spacing,
        empty_pred=config["eval"]["empty_pred"],
    shell:
        "python -m harness --code-sha256 {params.code} sensitivity"
        " --run-configs {input.run_configs} --spacing {params.spacing}"
        " --empty-pred {params.empty_pred} --out-csv {output.csv} --tables $(dirname {output.html})"
        " --workers {threads} > {log} 2>&1"


rule provenance:
    input:
        run_info=PLAN.run_files("run_info.json"),
        run_configs=PLAN.run_files("run_config.yaml"),
        barrier=PLAN.barrier(),
    output:
        html=report(
            f"{PLAN.bench}/report/provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
        csv=f"{PLAN.bench}/report/provenance.csv",
    log:
        f"{PLAN.bench}/logs/provenance.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("provenance-report"),
    shell:
        "python -m harness --code-sha256 {params.code} provenance-report"
        " --run-info {input.run_info} --out {output.html} > {log} 2>&1"


rule landing:
    # The report's landing page (workflow/report/workflow.rst includes it): the headline tables and the figure.
    input:
        tables=[f"{TARGETS.tables}/{ds}_voxel.html" for ds in TARGETS.datasets],
        figure=f"{TARGETS.figures}/dice_vs_labeled.png",
    output:
        f"{PLAN.bench}/report/landing.html",
    log:
        f"{PLAN.bench}/logs/landing.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("report-landing"),
    shell:
        "python -m harness --code-sha256 {params.code} report-landing"
        " --tables {input.tables} --figure {input.figure} --out {output} > {log} 2>&1"


rule cost:
    input:
        benchmarks=cost_inputs(),
        run_info=PLAN.run_files("run_info.json"),
        barrier=PLAN.barrier(),
    output:
        tables=multiext(f"{TARGETS.tables}/cost.", "md", "csv", "tex"),
        html=report(
            f"{TARGETS.tables}/cost.html", caption="../report/cost.rst", category="Cost"
        ),
    log:
        f"{PLAN.bench}/logs/cost.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("cost-table"),
        patterns=lambda wildcards: [f"{rule}={pattern}" for rule, pattern in cost_patterns().items()],
    shell:
        "python -m harness --code-sha256 {params.code} cost-table"
        " --pattern {params.patterns:q} --inputs {input.benchmarks}"
        " --run-info {input.run_info} --out $(dirname {output.html}) > {log} 2>&1"


rule ablation:
    # Ablation tables and sweep figures of the grid's variants (harness.report.ablation, docs/ablations.md).
    input:
        csv=PLAN.run_files("metrics_per_case.csv"),
        run_configs=PLAN.run_files("run_config.yaml"),
        barrier=PLAN.barrier(),
    output:
        tables=TARGETS.ablation_tables(),
        html=TARGETS.ablation_tables_html(),
        figures=TARGETS.sweep_figures(),
    log:
        f"{PLAN.bench}/logs/ablation.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("report-ablation"),
        methods=config["methods"],
        sweeps=[f"{base}:{key}" for base, key in TARGETS.swept],
        tables=TARGETS.tables,
        figures=TARGETS.figures,
    shell:
        "python -m harness --code-sha256 {params.code} report-ablation"
        " --inputs {input.csv} --run-configs {input.run_configs}"
        " --methods {params.methods} --sweeps {params.sweeps} --tables {params.tables} --figures {params.figures}"
        " > {log} 2>&1"


rule selection_audit:
    # The test-set selection audit (harness.report.selection_audit, docs/protocol.md "Checkpoint selection"): what
    # reporting the best test checkpoint would have added; a measurement of leakage, never mixed into the main tables.
    input:
        curves=PLAN.run_files("test_curve.csv"),  # outputs of the train rule when the audit is on
        run_info=PLAN.run_files("run_info.json"),
        metrics=PLAN.run_files("metrics_per_case.csv"),
        barrier=PLAN.barrier(),
    output:
        TARGETS.audit_files(),
    log:
        f"{PLAN.bench}/logs/selection_audit.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("report-selection-audit"),
        out=lambda wildcards, output: Path(output[0]).parent.parent,  # results/<name>: tables/ and figures/
    shell:
        "python -m harness --code-sha256 {params.code} report-selection-audit --curves {input.curves}"
        " --run-info {input.run_info} --metrics {input.metrics} --out {params.out} > {log} 2>&1"
