# One training job per grid cell. run_config carries the cell's parameters (the rerun trigger) and starts the run's
# journal; train takes the resolved file, the data manifest and the numerics-relevant source files as inputs.


rule run_config:
    # Runs inside the Snakemake process (no interpreter and torch start-up per run): harness.method.build
    # .write_run_config, the same as `python -m harness resolve-run`.
    output:
        config=f"{RUN}/run_config.yaml",
        journal=f"{RUN}/journal.log",  # every later job of the run appends to it (harness.workflow.lineage)
    log:
        f"{RUN}/logs/run_config.log",
    localrule: True
    params:
        cell=run_params,
    run:
        write_run_config_logged(params.cell, output.config, log[0])


rule train:
    input:
        run_config=f"{RUN}/run_config.yaml",
        gpu_slot=GPU_SLOT,
        data=data_manifest,
        code=code_inputs,
        previous=previous_stage_model(None),
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
    params:
        previous=previous_model_arg,
    shell:
        "bash {input.gpu_slot:q} python -m harness train --run-config {input.run_config}"
        " --run-dir $(dirname {output.model}) --threads {threads} {params.previous} > {log} 2>&1"


# One rule per pre-training stage name (STAGE_NAMES, read from the method files): sup_local_contrast runs as
# pretrain_stage1 -> pretrain_stage2 -> train, each job taking the previous one's model.pt as input. A shared stage
# (SHARED_STAGES: no labels read) runs only in the folder of the smallest labeled count (stage_home in common.smk).
for STAGE in STAGE_NAMES:

    rule:
        name:
            f"pretrain_{STAGE}"
        input:
            run_config=f"{RUN}/run_config.yaml",
            gpu_slot=GPU_SLOT,
            data=data_manifest,
            code=code_inputs,
            previous=previous_stage_model(STAGE),
        output:
            model=f"{RUN}/{STAGE}/model.pt",
            run_info=f"{RUN}/{STAGE}/run_info.json",
        log:
            f"{RUN}/logs/pretrain_{STAGE}.log",
        benchmark:
            f"{RUN}/benchmarks/pretrain_{STAGE}.tsv"
        conda:
            "../../environment.yml"
        threads: TRAIN_THREADS
        resources:
            gpu=1,
            mem_mb=config["compute"]["train_mem_mb"],
            runtime=config["compute"]["train_runtime_min"],
        params:
            stage=STAGE,
            previous=previous_model_arg,
        shell:
            "bash {input.gpu_slot:q} python -m harness train --run-config {input.run_config}"
            " --run-dir $(dirname {input.run_config}) --stage {params.stage} --threads {threads}"
            " {params.previous} > {log} 2>&1"
