# One DeepSpeed training job per backbone x benchmark x ablation x seed.
# Checkpoints under .../checkpoints are not outputs: a failed or preempted job resumes from them.


def launcher(wildcards, resources):
    gpus = resources.get("gpu", 0) if hasattr(resources, "get") else getattr(resources, "gpu", 0)
    procs = train_settings(config, wildcards.backbone, wildcards.benchmark).num_processes
    n = max(int(gpus or 0), procs)
    return "python" if n == 1 else f"torchrun --standalone --nproc_per_node {n}"


rule train:
    input:
        data=OUT + "/data/{benchmark}",
        backbone=backbone_inputs,
        memory=memory_plan,
    output:
        directory(RUN + "/policy"),
    params:
        cfg=STUDY_CONFIG,
        run=RUN,
        source=backbone_source,
        launch=launcher,
        digest=lambda wc: digest(
            {k: config["backbones"][wc.backbone].get(k) for k in ("family", "source", "training")},
            config["benchmarks"][wc.benchmark],
            config["policy"],
            config["training"],
        ),
    threads: lambda wc: res("train", "cpus", 1)
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **resources_of("train"),
    log:
        RUN + "/train.log",
    shell:
        "{params.launch} -m vlm4vla_core train --config {params.cfg} --backbone {wildcards.backbone}"
        " --benchmark {wildcards.benchmark} --ablation {wildcards.ablation} --seed {wildcards.seed}"
        " --source {params.source} --data {input.data} --run-dir {params.run} >> {log} 2>&1"
