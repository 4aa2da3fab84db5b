# Backbone checkpoints built offline (source: tiny) and the per-backbone report.


rule make_tiny_backbone:
    output:
        directory(OUT + "/backbones/{backbone}/checkpoint"),
    params:
        family=lambda wc: config["backbones"][wc.backbone]["family"],
        size=BACKBONE_IMAGE_SIZE,
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **resources_of("make_tiny_backbone"),
    log:
        OUT + "/logs/make_tiny_backbone/{backbone}.log",
    benchmark:
        job_times(OUT + "/logs/make_tiny_backbone/{backbone}.log"),
    shell:
        "python -m vlm4vla_core make-tiny-backbone --family {params.family} --image-size {params.size}"
        " --out {output} > {log} 2>&1"


rule backbone_report:
    # an embodied-SFT variant is reported as its base (same architecture, parameters and tokens)
    input:
        lambda wc: local_inputs(architecture_of(wc.backbone)),
    output:
        OUT + "/backbones/{backbone}/report.json",
    params:
        family=lambda wc: config["backbones"][wc.backbone]["family"],
        source=lambda wc: source_of(architecture_of(wc.backbone)),
        size=BACKBONE_IMAGE_SIZE,
        head=STUDY_VIEW.policy.head_hidden,
        layers=STUDY_VIEW.policy.head_layers,
        action_dim=report_head(STUDY_VIEW)[1],
        chunk=report_head(STUDY_VIEW)[0],
        # hub backbones: their published config on the meta device (no weights on a CPU node)
        meta=lambda wc: "" if config["backbones"][architecture_of(wc.backbone)]["source"] == "tiny" else "--meta",
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **resources_of("backbone_report"),
    log:
        OUT + "/logs/backbone_report/{backbone}.log",
    benchmark:
        job_times(OUT + "/logs/backbone_report/{backbone}.log"),
    shell:
        "python -m vlm4vla_core backbone-report --family {params.family} --source {params.source}"
        " --image-size {params.size} --chunk {params.chunk} --action-dim {params.action_dim}"
        " --head-hidden {params.head} --head-layers {params.layers} {params.meta} --out {output} > {log} 2>&1"


rule plan_memory:
    # GPU memory per rank of a train job (meta device, no weights); fails -- so the job is never
    # submitted -- when the job does not fit the GPUs that resources.train gives it.
    output:
        OUT + "/backbones/{backbone}/memory_{benchmark}.json",
    params:
        cfg=STUDY_CONFIG,
        digest=lambda wc: digest(config["backbones"][wc.backbone], config["benchmarks"][wc.benchmark],
                                 config["training"], config["policy"], config["resources"].get("train", {})),
    localrule: True
    conda:
        "../../envs/vlm4vla.yaml"
    log:
        OUT + "/logs/plan_memory/{backbone}_{benchmark}.log",
    benchmark:
        job_times(OUT + "/logs/plan_memory/{backbone}_{benchmark}.log"),
    shell:
        "python -m vlm4vla_core plan-memory --config {params.cfg} --backbone {wildcards.backbone}"
        " --benchmark {wildcards.benchmark} --check --out {output} > {log} 2>&1"
