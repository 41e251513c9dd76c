# Data preparation: per data source, rules that write resources/{dataset}/ in the dataset's on-disk format and end
# with resources/{dataset}/manifest.json (train depends on it; its sha256 goes into every run's provenance).
# Sources and the manual step: docs/data.md. Downloads are local rules (cluster nodes may have no internet).
# Every case is its own target, so a subset can be fetched by naming its files; the manifest needs all cases.
# Each rule's code identity is a param (harness.run.code): editing the preparation code reruns what it prepared.
LA_CASE = r"[0-9A-Z]{20}"  # LA case IDs (they reach shell commands)
PANCREAS_CASE = r"image\d{4}"
NIFTI_CASE = r"[A-Za-z0-9][A-Za-z0-9_-]*"  # harness.data.splits.SAFE_CASE_ID (no dots, no path separators)


rule make_synthetic:
    output:
        "resources/{dataset}/manifest.json",
    log:
        "logs/{dataset}/make_synthetic.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("synthetic")),
    conda:
        "../../environment.yml"
    params:
        code=code("make-synthetic"),
        seed=DATA.synthetic("seed"),
        n_test=DATA.synthetic("n_test"),
        n_train=DATA.value("n_train"),
    shell:
        "python -m harness --code-sha256 {params.code} make-synthetic"
        " --out resources/{wildcards.dataset} --seed {params.seed}"
        " --n-train {params.n_train} --n-test {params.n_test} > {log} 2>&1"


# -- LA, released h5 files (protocol §1.2) ---------------------------------------------------------------------------
rule fetch_la_case:
    output:
        "resources/{dataset}/2018LA_Seg_Training Set/{case}/mri_norm2.h5",
    log:
        "logs/{dataset}/fetch_la_case/{case}.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("released_h5")),
        case=LA_CASE,
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("fetch-la"),
        root=DATA.root,
        base_url=DATA.source("base_url"),
        retries=DATA.source("retries"),
    shell:
        "python -m harness --code-sha256 {params.code} fetch-la"
        " --root {params.root} --base-url {params.base_url:q} --case {wildcards.case}"
        " --retries {params.retries} > {log} 2>&1"


rule fetch_la_lists:
    output:
        train="resources/{dataset}/train.list",
        test="resources/{dataset}/test.list",
    log:
        "logs/{dataset}/fetch_la_lists.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("released_h5")),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("fetch-la"),
        root=DATA.root,
        base_url=DATA.source("base_url"),
        retries=DATA.source("retries"),
    shell:
        "python -m harness --code-sha256 {params.code} fetch-la"
        " --root {params.root} --base-url {params.base_url:q} --lists"
        " --retries {params.retries} > {log} 2>&1"


# -- LA, raw challenge nrrd (protocol §1.5) --------------------------------------------------------------------------
rule preprocess_la_raw:
    input:
        image=DATA.la_raw_file("lgemri.nrrd"),
        mask=DATA.la_raw_file("laendo.nrrd"),
    output:
        h5="resources/{dataset}/2018LA_Seg_Training Set/{case}/mri_norm2.h5",
        margins="resources/{dataset}/raw_margins/{case}.json",
    log:
        "logs/{dataset}/preprocess_la_raw/{case}.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("raw_nrrd")),
        case=LA_CASE,
    conda:
        "../../environment.yml"
    params:
        code=code("la-raw"),
        root=DATA.root,
        raw_root=DATA.source("raw_root"),
        seed=DATA.source("crop_seed"),
    shell:
        "python -m harness --code-sha256 {params.code} la-raw"
        " --root {params.root} --raw-root {params.raw_root:q} --case {wildcards.case}"
        " --seed {params.seed} > {log} 2>&1"


rule la_lists_from_manifest:
    output:
        train="resources/{dataset}/train.list",
        test="resources/{dataset}/test.list",
    log:
        "logs/{dataset}/la_lists.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("raw_nrrd")),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("la-lists"),
        root=DATA.root,
    shell:
        "python -m harness --code-sha256 {params.code} la-lists --root {params.root} > {log} 2>&1"


rule la_manifest:
    input:
        cases=DATA.la_case_files,
        train="resources/{dataset}/train.list",
        test="resources/{dataset}/test.list",
    output:
        "resources/{dataset}/manifest.json",
    log:
        "logs/{dataset}/la_manifest.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("released_h5") + DATA.datasets_of("raw_nrrd")),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("la-manifest"),
        root=DATA.root,
        source=DATA.value("source"),
        seed=DATA.source("crop_seed"),
    shell:
        "python -m harness --code-sha256 {params.code} la-manifest --root {params.root} --source {params.source}"
        " --crop-seed={params.seed:q} > {log} 2>&1"


# -- NIH Pancreas-CT from TCIA (protocol §2) -------------------------------------------------------------------------
rule pancreas_series:
    output:
        "resources/{dataset}/raw/series.json",
    log:
        "logs/{dataset}/pancreas_series.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("tcia")),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("tcia-series"),
        api_url=DATA.source("api_url"),
        collection=DATA.source("collection"),
        dicom_root=DATA.source("dicom_root"),
        retries=DATA.source("retries"),
    shell:
        "python -m harness --code-sha256 {params.code} tcia-series --out {output} --api-url={params.api_url:q}"
        " --collection {params.collection:q} --dicom-root={params.dicom_root:q} --retries {params.retries}"
        " > {log} 2>&1"


rule pancreas_labels:
    output:
        directory("resources/{dataset}/raw/labels"),
    log:
        "logs/{dataset}/pancreas_labels.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("tcia")),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("pancreas-labels"),
        raw=DATA.raw_dir,
        url=DATA.source("labels_url"),
        sha256=DATA.source("labels_sha256"),
        retries=DATA.source("retries"),
    shell:
        "python -m harness --code-sha256 {params.code} pancreas-labels --raw-dir {params.raw} --url {params.url:q}"
        " --sha256={params.sha256:q} --retries {params.retries} > {log} 2>&1"


rule fetch_pancreas_series:
    input:
        "resources/{dataset}/raw/series.json",
    output:
        temp(directory("resources/{dataset}/raw/dicom/{case}")),  # ~130 MB per case, deleted once preprocessed
    log:
        "logs/{dataset}/fetch_pancreas_series/{case}.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("tcia")),
        case=PANCREAS_CASE,
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("tcia-fetch"),
        api_url=DATA.source("api_url"),
        retries=DATA.source("retries"),
    shell:
        "python -m harness --code-sha256 {params.code} tcia-fetch"
        " --index {input} --case {wildcards.case} --out {output}"
        " --api-url={params.api_url:q} --retries {params.retries} > {log} 2>&1"


rule preprocess_pancreas_case:
    input:
        dicom="resources/{dataset}/raw/dicom/{case}",
        labels="resources/{dataset}/raw/labels",
    output:
        h5="resources/{dataset}/h5/{case}_norm.h5",
        qa="resources/{dataset}/qa/{case}.json",
        overlay="resources/{dataset}/qa/{case}.png",
    log:
        "logs/{dataset}/preprocess_pancreas_case/{case}.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("tcia")),
        case=PANCREAS_CASE,
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,  # a 512 x 512 x ~300 CT in float32 plus its 1 mm resampling
    params:
        code=code("pancreas-case"),
        root=DATA.root,
    shell:
        "python -m harness --code-sha256 {params.code} pancreas-case --case {wildcards.case} --dicom {input.dicom}"
        " --labels {input.labels} --root {params.root} --threads {threads} > {log} 2>&1"


rule pancreas_manifest:
    input:
        cases=DATA.pancreas_case_files,
        labels="resources/{dataset}/raw/labels",
        series="resources/{dataset}/raw/series.json",
    output:
        manifest="resources/{dataset}/manifest.json",
        train="resources/{dataset}/train.list",
        test="resources/{dataset}/test.list",
    log:
        "logs/{dataset}/pancreas_manifest.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("tcia")),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("pancreas-manifest"),
        root=DATA.root,
        split=DATA.pancreas_split,
        policy=DATA.source("duplicates"),
    shell:
        "python -m harness --code-sha256 {params.code} pancreas-manifest --root {params.root} --split {params.split}"
        " --policy {params.policy} > {log} 2>&1"


# -- your own dataset: MSD or nnU-Net v2 raw layout (docs/data.md "Your own dataset") --------------------------------
rule nifti_plan:
    input:
        DATA.nifti_sources,
    output:
        "resources/{dataset}/plan.json",
    log:
        "logs/{dataset}/nifti_plan.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("nifti")),
    conda:
        "../../environment.yml"
    params:
        code=code("nifti-plan"),
        root=DATA.root,
        settings=DATA.nifti_settings,
    shell:
        "python -m harness --code-sha256 {params.code} nifti-plan"
        " --settings {params.settings:q} --out {params.root} > {log} 2>&1"


rule nifti_case:
    input:
        plan="resources/{dataset}/plan.json",
        source=DATA.nifti_case_sources,
    output:
        h5="resources/{dataset}/cases/{case}.h5",
        qa="resources/{dataset}/qa/{case}.json",
        overlay="resources/{dataset}/qa/{case}.png",
    log:
        "logs/{dataset}/nifti_case/{case}.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("nifti")),
        case=NIFTI_CASE,
    conda:
        "../../environment.yml"
    resources:
        mem_mb=4000,
    params:
        code=code("nifti-case"),
        root=DATA.root,
    shell:
        "python -m harness --code-sha256 {params.code} nifti-case"
        " --out {params.root} --case {wildcards.case} > {log} 2>&1"


rule nifti_manifest:
    input:
        cases=DATA.nifti_case_files,
        plan="resources/{dataset}/plan.json",
    output:
        manifest="resources/{dataset}/manifest.json",
        train="resources/{dataset}/train.list",
        test="resources/{dataset}/test.list",
    log:
        "logs/{dataset}/nifti_manifest.log",
    wildcard_constraints:
        dataset=one_of(DATA.datasets_of("nifti")),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        code=code("nifti-manifest"),
        root=DATA.root,
    shell:
        "python -m harness --code-sha256 {params.code} nifti-manifest --out {params.root} > {log} 2>&1"
