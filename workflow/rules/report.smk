# Aggregation over seeds into paper-style tables, summary.json (DVC metrics) and seaborn figures.


rule aggregate:
    input:
        per_case_csvs(),
    output:
        table_files(),
        runs=f"results/{NAME}/runs.csv",
        summary=f"results/{NAME}/summary.json",
    log:
        f"results/{NAME}/logs/aggregate.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        name=NAME,
    shell:
        "python -m harness aggregate --name {params.name} --out $(dirname {output.summary}) --inputs {input}"
        " > {log} 2>&1"


rule figures:
    input:
        per_case_csvs(),
    output:
        figures=figure_files(),
    log:
        f"results/{NAME}/logs/figures.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        out=output_folder,
    shell:
        "python -m harness figures --out {params.out} --inputs {input} > {log} 2>&1"
