# Test-set prediction (sliding window -> NIfTI label maps) and per-case metrics. Evaluation settings are params of
# these rules only, so changing them never retrains; each rule's code identity is a param of its own (editing the
# metrics reruns evaluate and the reports, never training or prediction).


rule predict:
    input:
        run_config=f"{RUN}/run_config.yaml",
        gpu_slot=GPU_SLOT,
        model=f"{RUN}/model.pt",
    output:
        directory(f"{RUN}/predictions"),
    log:
        f"{RUN}/logs/predict.log",
    benchmark:
        f"{RUN}/benchmarks/predict.tsv"
    conda:
        "../../environment.yml"
    threads: COMPUTE["train_threads"]
    resources:
        gpu=1,
        mem_mb=COMPUTE["predict_mem_mb"],
        runtime=COMPUTE["predict_runtime_min"],
    params:
        code=code("predict"),
        stride=DATA.words("stride"),
        spacing=DATA.eval_spacing,
        windows=config["eval"]["windows_per_batch"],
    shell:
        "bash {input.gpu_slot:q} python -m harness --code-sha256 {params.code} predict --run-config"
        " {input.run_config} --model {input.model} --out {output} --stride {params.stride}"
        " --spacing {params.spacing} --windows {params.windows} > {log} 2>&1"


rule evaluate:
    input:
        run_config=f"{RUN}/run_config.yaml",
        predictions=f"{RUN}/predictions",
        run_info=f"{RUN}/run_info.json",
    output:
        csv=f"{RUN}/metrics_per_case.csv",
        json=f"{RUN}/metrics.json",
    log:
        f"{RUN}/logs/evaluate.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate.tsv"
    conda:
        "../../environment.yml"
    params:
        code=code("evaluate"),
        spacing=DATA.eval_spacing,
        empty_pred=config["eval"]["empty_pred"],
    shell:
        "python -m harness --code-sha256 {params.code} evaluate --run-config {input.run_config}"
        " --predictions {input.predictions} --run-info {input.run_info} --spacing {params.spacing}"
        " --empty-pred {params.empty_pred} --out-csv {output.csv} --out-json {output.json} > {log} 2>&1"
