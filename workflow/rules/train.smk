# One training job per run (and one per pre-training stage of its method). run_config carries the run's parameters
# (the rerun trigger of the run) and starts its journal; every job takes its code identity as a param (harness.run.code:
# editing a file its command imports reruns it, nothing else does) and hands it to the job, which refuses other code.
# Bookkeeping (log and checkpoint periods, loader workers) reaches the job through `resources`, which never trigger a
# rerun: it changes no number. The thread count is part of the run config (it changes CPU numbers).


rule run_config:
    # Runs inside the Snakemake process (no interpreter and torch start-up per run): harness.method.build
    # .write_run_config, the same as `python -m harness resolve-run`.
    output:
        config=f"{RUN}/run_config.yaml",
        journal=f"{RUN}/journal.log",  # every later job of the run appends to it (harness.run.lineage)
    log:
        f"{RUN}/logs/run_config.log",
    localrule: True
    params:
        cell=run_params,
        code=code("resolve-run"),
    run:
        write_run_config_logged(params.cell, output.config, log[0], written_at(config, wildcards.method, wildcards.dataset))


#: A training job's cores: its torch threads (part of the run's identity) and its loader workers.
TRAIN_THREADS = sum((COMPUTE["train_threads"], COMPUTE["loader_workers"]))
TRAIN_RESOURCES = dict(
    gpu=1,
    mem_mb=COMPUTE["train_mem_mb"],
    runtime=COMPUTE["train_runtime_min"],
    log_every=COMPUTE["log_every"],
    checkpoint_every=COMPUTE["checkpoint_every"],
    loader_workers=COMPUTE["loader_workers"],
)


rule train:
    input:
        run_config=f"{RUN}/run_config.yaml",
        gpu_slot=GPU_SLOT,
        data=DATA.manifest,
        previous=previous_model(None),
    output:
        model=f"{RUN}/model.pt",
        run_info=f"{RUN}/run_info.json",
        curves=[f"{RUN}/{name}" for name in PLAN.curves()],  # the evaluations during training, if any
    log:
        f"{RUN}/logs/train.log",
    benchmark:
        f"{RUN}/benchmarks/train.tsv"
    conda:
        "../../environment.yml"
    threads: TRAIN_THREADS
    resources:
        **TRAIN_RESOURCES,
    params:
        code=code("train"),
        previous=previous_model_arg,
    shell:
        "bash {input.gpu_slot:q} python -m harness --code-sha256 {params.code} train --run-config {input.run_config}"
        " --run-dir $(dirname {output.model}) {params.previous} --log-every {resources.log_every}"
        " --checkpoint-every {resources.checkpoint_every} --workers {resources.loader_workers} > {log} 2>&1"


# One rule per pre-training stage name (STAGE_NAMES, read from the method files): sup_local_contrast runs as
# pretrain_stage1 -> pretrain_stage2 -> train, each job taking the previous one's model.pt as input. A shared stage
# (it reads no labels) runs only in the folder of the smallest labeled count (harness.run.stages.stage_home).
for STAGE in STAGE_NAMES:

    rule:
        name:
            f"pretrain_{STAGE}"
        input:
            run_config=f"{RUN}/run_config.yaml",
            gpu_slot=GPU_SLOT,
            data=DATA.manifest,
            previous=previous_model(STAGE),
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
            **TRAIN_RESOURCES,
        params:
            code=code("train"),
            stage=STAGE,
            previous=previous_model_arg,
        shell:
            "bash {input.gpu_slot:q} python -m harness --code-sha256 {params.code} train --run-config"
            " {input.run_config} --run-dir $(dirname {input.run_config}) --stage {params.stage} {params.previous}"
            " --log-every {resources.log_every} --checkpoint-every {resources.checkpoint_every}"
            " --workers {resources.loader_workers} > {log} 2>&1"
