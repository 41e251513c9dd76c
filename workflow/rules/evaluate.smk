# Test-set prediction (sliding window -> NIfTI label maps) and per-case metrics. Evaluation settings are params of
# these rules only, so changing them never retrains.


rule predict:
    input:
        run_config=RUN + "/run_config.yaml",
        model=RUN + "/model.pt",
    output:
        directory(RUN + "/predictions"),
    params:
        stride=data_setting("stride"),
        spacing=data_setting("spacing_mm"),
        windows=config["eval"]["windows_per_batch"],
    log:
        RUN + "/logs/predict.log",
    threads: TRAIN_THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "bash workflow/scripts/gpu_slot.sh python -m harness predict --run-config {input.run_config}"
        " --model {input.model} --out {output} --stride {params.stride} --spacing {params.spacing}"
        " --windows {params.windows} --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        run_config=RUN + "/run_config.yaml",
        predictions=RUN + "/predictions",
        run_info=RUN + "/run_info.json",
    output:
        csv=RUN + "/metrics_per_case.csv",
        json=RUN + "/metrics.json",
    params:
        spacing=data_setting("spacing_mm"),
        empty_pred=config["eval"]["empty_pred"],
    log:
        RUN + "/logs/evaluate.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m harness evaluate --run-config {input.run_config} --predictions {input.predictions}"
        " --run-info {input.run_info} --spacing {params.spacing} --empty-pred {params.empty_pred}"
        " --out-csv {output.csv} --out-json {output.json} > {log} 2>&1"
