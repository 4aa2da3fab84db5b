# One DeepSpeed training job per backbone x benchmark x ablation x seed.
# Checkpoints under .../checkpoints are not outputs: a failed or preempted job resumes from them.


def launcher(wildcards):
    """One DeepSpeed process per GPU over the job's nodes (vlm4vla_core.launch: srun in Slurm, else torchrun)."""
    nodes, per_node = train_layout(wildcards.backbone, wildcards.benchmark)
    cpus = max(1, train_res(wildcards.backbone, "cpus", 1) // per_node)
    return f"python -m vlm4vla_core.launch --nodes {nodes} --procs-per-node {per_node} --cpus-per-task {cpus} --"


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
    threads: res("train", "cpus", 1)
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **train_resources(),
    log:
        RUN + "/train.log",
    benchmark:
        job_times(RUN + "/train.log"),
    shell:
        "{params.launch} train --config {params.cfg} --backbone {wildcards.backbone}"
        " --benchmark {wildcards.benchmark} --ablation {wildcards.ablation} --seed {wildcards.seed}"
        " --source {params.source} --data {input.data} --run-dir {params.run} >> {log} 2>&1"
