# Results: paper-style tables with the published comparison and statistics, summary.json (DVC metrics), seaborn
# figures, qualitative overlays, the protocol-sensitivity table (from saved predictions), the provenance page and,
# when the per-run rules declare `benchmark:`, the cost table. Outputs flagged with report() form
# `snakemake --report report.html` (docs/reporting.md). Every rule takes the `barrier` of the runs it reads (their
# journals and metrics, harness.workflow.lineage): a job of those runs that started and did not finish makes it rerun.


rule aggregate:
    input:
        csv=per_case_csvs(),
        barrier=run_barrier(),
    output:
        table_files(),
        html=table_reports(),
        runs=f"results/{NAME}/runs.csv",
        summary=f"results/{NAME}/summary.json",
    log:
        f"results/{NAME}/logs/aggregate.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        name=NAME,
        published=REPORT["published_source"],
        reference=REPORT["reference_method"],
        samples=REPORT["bootstrap_samples"],
        seed=REPORT["bootstrap_seed"],
        alternative=REPORT["test_alternative"],
    shell:
        "python -m harness report-tables --name {params.name} --out $(dirname {output.summary})"
        " --published-source {params.published} --reference {params.reference}"
        " --bootstrap-samples {params.samples} --bootstrap-seed {params.seed} --alternative {params.alternative}"
        " --inputs {input.csv} > {log} 2>&1"


rule figures:
    input:
        csv=per_case_csvs(),
        run_info=run_files("run_info.json"),
        barrier=run_barrier(),
    output:
        figures=figure_files(),
    log:
        f"results/{NAME}/logs/figures.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        out=output_folder,
        published=REPORT["published_source"],
    shell:
        "python -m harness report-figures --out {params.out} --published-source {params.published}"
        " --inputs {input.csv} --run-info {input.run_info} > {log} 2>&1"


rule qualitative:
    input:
        run_configs=dataset_runs("run_config.yaml", first_seed=True),
        predictions=dataset_runs("predictions", first_seed=True),
        data=data_manifest,
        barrier=dataset_barrier(first_seed=True),
    output:
        png=report(
            f"{FIGURES}/qualitative_{{dataset}}.png",
            caption="../report/qualitative.rst",
            category="Qualitative",
            labels={"dataset": "{dataset}"},
        ),
        pdf=f"{FIGURES}/qualitative_{{dataset}}.pdf",
    log:
        f"results/{NAME}/logs/qualitative_{{dataset}}.log",
    conda:
        "../../environment.yml"
    params:
        case=qualitative_case,
        slices=REPORT["qualitative_slices"],
    shell:
        "python -m harness qualitative --run-configs {input.run_configs} --out {output.png}"
        " --case={params.case:q} --slices {params.slices} > {log} 2>&1"


rule sensitivity:
    input:
        run_configs=dataset_runs("run_config.yaml"),
        predictions=dataset_runs("predictions"),
        run_info=dataset_runs("run_info.json"),
        data=data_manifest,
        barrier=dataset_barrier(),
    output:
        csv=f"results/{NAME}/sensitivity/{{dataset}}_per_case.csv",
        tables=multiext(f"{TABLES}/{{dataset}}_sensitivity.", "md", "csv", "tex"),
        html=report(
            f"{TABLES}/{{dataset}}_sensitivity.html",
            caption="../report/sensitivity.rst",
            category="Protocol sensitivity",
            labels={"dataset": "{dataset}"},
        ),
    log:
        f"results/{NAME}/logs/sensitivity_{{dataset}}.log",
    conda:
        "../../environment.yml"
    threads: 4
    params:
        spacing=eval_spacing,
        empty_pred=config["eval"]["empty_pred"],
    shell:
        "python -m harness sensitivity --run-configs {input.run_configs} --spacing {params.spacing}"
        " --empty-pred {params.empty_pred} --out-csv {output.csv} --tables $(dirname {output.html})"
        " --workers {threads} > {log} 2>&1"


rule provenance:
    input:
        run_info=run_files("run_info.json"),
        run_configs=run_files("run_config.yaml"),
        barrier=run_barrier(),
    output:
        html=report(
            f"results/{NAME}/report/provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
        csv=f"results/{NAME}/report/provenance.csv",
    log:
        f"results/{NAME}/logs/provenance.log",
    localrule: True
    conda:
        "../../environment.yml"
    shell:
        "python -m harness provenance-report --run-info {input.run_info} --out {output.html} > {log} 2>&1"


rule landing:
    # The report's landing page (workflow/report/workflow.rst includes it): the headline tables and the figure.
    input:
        tables=[f"{TABLES}/{ds}_voxel.html" for ds in DATASETS],
        figure=f"{FIGURES}/dice_vs_labeled.png",
    output:
        f"results/{NAME}/report/landing.html",
    log:
        f"results/{NAME}/logs/landing.log",
    localrule: True
    conda:
        "../../environment.yml"
    shell:
        "python -m harness report-landing --tables {input.tables} --figure {input.figure} --out {output} > {log} 2>&1"


rule cost:
    input:
        benchmarks=cost_inputs(),
        run_info=run_files("run_info.json"),
        barrier=run_barrier(),
    output:
        tables=multiext(f"{TABLES}/cost.", "md", "csv", "tex"),
        html=report(
            f"{TABLES}/cost.html", caption="../report/cost.rst", category="Cost"
        ),
    log:
        f"results/{NAME}/logs/cost.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        patterns=cost_pattern_args,
    shell:
        "python -m harness cost-table --pattern {params.patterns:q} --inputs {input.benchmarks}"
        " --run-info {input.run_info} --out $(dirname {output.html}) > {log} 2>&1"


rule ablation:
    # Ablation tables and sweep figures of the grid's variants (harness.report.ablation, docs/ablations.md).
    input:
        csv=per_case_csvs(),
        run_configs=run_files("run_config.yaml"),
        barrier=run_barrier(),
    output:
        tables=ablation_table_files(),
        html=ablation_table_reports(),
        figures=sweep_figure_files(),
    log:
        f"results/{NAME}/logs/ablation.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        methods=config["methods"],
        sweeps=SWEPT_KEYS,
        tables=TABLES,
        figures=FIGURES,
    shell:
        "python -m harness report-ablation --inputs {input.csv} --run-configs {input.run_configs}"
        " --methods {params.methods} --sweeps {params.sweeps} --tables {params.tables} --figures {params.figures}"
        " > {log} 2>&1"
