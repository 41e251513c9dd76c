# Data preparation: one rule per data source, each writing resources/{dataset}/ in the released LA layout plus a
# manifest.json (its sha256 goes into every run's provenance). Real LA and Pancreas downloads: issue #3.


rule make_synthetic:
    output:
        "resources/{dataset}/manifest.json",
    log:
        "logs/{dataset}/make_synthetic.log",
    wildcard_constraints:
        dataset="|".join(SYNTHETIC) or "(?!x)x",
    conda:
        "../../environment.yml"
    params:
        seed=synthetic_setting("seed"),
        n_test=synthetic_setting("n_test"),
        n_train=data_value("n_train"),
    shell:
        "python -m harness make-synthetic --out resources/{wildcards.dataset} --seed {params.seed}"
        " --n-train {params.n_train} --n-test {params.n_test} > {log} 2>&1"
