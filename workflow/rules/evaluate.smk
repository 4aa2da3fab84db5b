# Closed-loop rollouts of each trained policy, and of the zero-action baseline on the same episodes.
# A benchmark's episodes are split over eval_shards jobs (default 1); merge_eval joins them into
# the run's eval.json. A shard job that is stopped keeps its finished episodes and runs the rest.

BASE_RUN = OUT + "/runs/" + BASELINE + "/{benchmark}/none/seed{seed}"


rule evaluate:
    input:
        policy=RUN + "/policy",
    output:
        RUN + "/eval/shard{shard}.json",
    params:
        cfg=STUDY_CONFIG,
        shards=lambda wc: n_shards(wc.benchmark),
        digest=lambda wc: digest(config["benchmarks"][wc.benchmark], config["evaluation"]),
    threads: res("evaluate", "cpus", 1)
    conda:
        eval_env
    resources:
        **resources_of("evaluate"),
    log:
        RUN + "/eval/shard{shard}.log",
    benchmark:
        job_times(RUN + "/eval/shard{shard}.log"),
    shell:
        "python -m vlm4vla_core evaluate --config {params.cfg} --benchmark {wildcards.benchmark}"
        " --seed {wildcards.seed} --policy {input.policy} --backbone {wildcards.backbone}"
        " --ablation {wildcards.ablation} --shard {wildcards.shard} --shards {params.shards}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule evaluate_baseline:
    output:
        BASE_RUN + "/eval/shard{shard}.json",
    params:
        cfg=STUDY_CONFIG,
        shards=lambda wc: n_shards(wc.benchmark),
        digest=lambda wc: digest(config["benchmarks"][wc.benchmark]),
    threads: 1
    conda:
        eval_env
    resources:
        **resources_of("evaluate_baseline"),
    log:
        BASE_RUN + "/eval/shard{shard}.log",
    benchmark:
        job_times(BASE_RUN + "/eval/shard{shard}.log"),
    shell:
        "python -m vlm4vla_core evaluate --config {params.cfg} --benchmark {wildcards.benchmark}"
        " --seed {wildcards.seed} --policy {BASELINE} --shard {wildcards.shard} --shards {params.shards}"
        " --threads 1 --out {output} > {log} 2>&1"


ruleorder: evaluate_baseline > evaluate


localrules:
    merge_eval,


rule merge_eval:
    input:
        shard_files(RUN),
    output:
        RUN + "/eval.json",
    benchmark:
        job_times(RUN + "/eval/merge"),
    conda:
        "../../envs/vlm4vla.yaml"
    shell:
        "python -m vlm4vla_core merge-eval {input} --out {output}"
