# One training job per grid cell. run_config carries the cell's parameters (the rerun trigger); train takes the
# resolved file, the data manifest and the numerics-relevant source files as inputs.


rule run_config:
    output:
        RUN + "/run_config.yaml",
    params:
        cell=run_params,
    log:
        RUN + "/logs/run_config.log",
    localrule: True
    conda:
        "../../environment.yml"
    shell:
        "python -m harness resolve-run --params {params.cell:q} --out {output} > {log} 2>&1"


rule train:
    input:
        run_config=RUN + "/run_config.yaml",
        data=data_manifest,
        code=code_inputs,
    output:
        model=RUN + "/model.pt",
        run_info=RUN + "/run_info.json",
    log:
        RUN + "/logs/train.log",
    threads: TRAIN_THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "bash workflow/scripts/gpu_slot.sh python -m harness train --run-config {input.run_config}"
        " --run-dir $(dirname {output.model}) --threads {threads} > {log} 2>&1"
