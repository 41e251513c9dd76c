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
        pretrained=previous_stage_model,
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


# Pre-training stages of methods that have them (harness.config.PRETRAINING_STAGES, e.g. sup_local_contrast's
# stage1 -> stage2); each stage's model.pt is the next job's input, the last one feeds `train`.
rule pretrain:
    input:
        run_config=f"{RUN}/run_config.yaml",
        gpu_slot=GPU_SLOT,
        data=data_manifest,
        code=code_inputs,
        previous=previous_stage_model,
    output:
        model=f"{RUN}/{{stage}}/model.pt",
        run_info=f"{RUN}/{{stage}}/run_info.json",
    log:
        f"{RUN}/logs/pretrain_{{stage}}.log",
    benchmark:
        f"{RUN}/benchmarks/pretrain_{{stage}}.tsv"
    conda:
        "../../environment.yml"
    threads: TRAIN_THREADS
    resources:
        gpu=1,
        mem_mb=config["compute"]["train_mem_mb"],
        runtime=config["compute"]["train_runtime_min"],
    params:
        run_dir=lambda wildcards: RUN.format(**wildcards),
    shell:
        "bash {input.gpu_slot:q} python -m harness train --run-config {input.run_config}"
        " --run-dir {params.run_dir:q} --stage {wildcards.stage} --threads {threads} > {log} 2>&1"
