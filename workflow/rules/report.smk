# Aggregation over seeds into paper-style tables, summary.json (DVC metrics) and seaborn figures.


rule aggregate:
    input:
        per_case_csvs(),
    output:
        table_files(),
        runs="results/" + NAME + "/runs.csv",
        summary="results/" + NAME + "/summary.json",
    log:
        "results/" + NAME + "/logs/aggregate.log",
    localrule: True
    conda:
        "../../environment.yml"
    shell:
        "python -m harness aggregate --name " + NAME + " --out results/" + NAME + " --inputs {input} > {log} 2>&1"


rule figures:
    input:
        per_case_csvs(),
    output:
        figure_files(),
    log:
        "results/" + NAME + "/logs/figures.log",
    localrule: True
    conda:
        "../../environment.yml"
    shell:
        "python -m harness figures --out results/" + NAME + "/figures --inputs {input} > {log} 2>&1"
