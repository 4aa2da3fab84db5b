# Closed-loop rollouts of each trained policy, and of the zero-action baseline on the same episodes.


rule evaluate:
    input:
        policy=RUN + "/policy",
    output:
        RUN + "/eval.json",
    params:
        cfg=STUDY_CONFIG,
        digest=lambda wc: digest(config["benchmarks"][wc.benchmark], config["evaluation"]),
    threads: lambda wc: res("evaluate", "cpus", 1)
    conda:
        "../../envs/metaworld.yaml"
    resources:
        **resources_of("evaluate"),
    log:
        RUN + "/evaluate.log",
    shell:
        "python -m vlm4vla_core evaluate --config {params.cfg} --benchmark {wildcards.benchmark}"
        " --seed {wildcards.seed} --policy {input.policy} --backbone {wildcards.backbone}"
        " --ablation {wildcards.ablation} --threads {threads} --out {output} > {log} 2>&1"


rule evaluate_baseline:
    output:
        OUT + "/runs/" + BASELINE + "/{benchmark}/none/seed{seed}/eval.json",
    params:
        cfg=STUDY_CONFIG,
        digest=lambda wc: digest(config["benchmarks"][wc.benchmark]),
    threads: 1
    conda:
        "../../envs/metaworld.yaml"
    resources:
        **resources_of("evaluate"),
    log:
        OUT + "/runs/" + BASELINE + "/{benchmark}/none/seed{seed}/evaluate.log",
    shell:
        "python -m vlm4vla_core evaluate --config {params.cfg} --benchmark {wildcards.benchmark}"
        " --seed {wildcards.seed} --policy zero-action --threads 1 --out {output} > {log} 2>&1"
