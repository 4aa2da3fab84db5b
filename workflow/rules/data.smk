# Benchmark data: Meta-World expert demonstrations are generated; other benchmarks are imported.


rule data:
    output:
        directory(OUT + "/data/{benchmark}"),
    params:
        cfg=STUDY_CONFIG,
        digest=lambda wc: digest(config["benchmarks"][wc.benchmark]),
    threads: lambda wc: res("collect_data", "cpus", 1)
    conda:
        "../../envs/metaworld.yaml"
    resources:
        **resources_of("collect_data"),
    log:
        OUT + "/logs/data/{benchmark}.log",
    shell:
        "python -m vlm4vla_core data --config {params.cfg} --benchmark {wildcards.benchmark}"
        " --workers {threads} --out {output} > {log} 2>&1"
