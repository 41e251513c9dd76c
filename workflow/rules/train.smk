# One training job per grid cell. run_config carries the cell's parameters (the rerun trigger); train takes the
# resolved file, the data manifest and the numerics-relevant source files as inputs.


rule run_config:
    output:
        f"{RUN}/run_config.yaml",
    log:
        f"{RUN}/logs/run_config.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        cell=run_params,
    shell:
        "python -m harness resolve-run --params {params.cell:q} --out {output} > {log} 2>&1"


rule train:
    input:
        run_config=f"{RUN}/run_config.yaml",
        gpu_slot=GPU_SLOT,
        data=data_manifest,
        code=code_inputs,
    output:
        model=f"{RUN}/model.pt",
        run_info=f"{RUN}/run_info.json",
    log:
        f"{RUN}/logs/train.log",
    benchmark:
        f"{RUN}/benchmarks/train.tsv"
    conda:
        "../../environment.yml"
    threads: TRAIN_THREADS
    resources:
        gpu=1,
        mem_mb=config["compute"]["train_mem_mb"],
        runtime=config["compute"]["train_runtime_min"],
    shell:
        "bash {input.gpu_slot:q} python -m harness train --run-config {input.run_config}"
        " --run-dir $(dirname {output.model}) --threads {threads} > {log} 2>&1"
