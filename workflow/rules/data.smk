# Benchmark training sets: generated (Meta-World) or imported from data_path, by each benchmark's plug-in.


rule data:
    output:
        directory(OUT + "/data/{benchmark}"),
    params:
        cfg=STUDY_CONFIG,
        digest=lambda wc: digest(config["benchmarks"][wc.benchmark]),
    threads: res("data", "cpus", 1)
    conda:
        data_env
    resources:
        **resources_of("data"),
    log:
        OUT + "/logs/data/{benchmark}.log",
    shell:
        "python -m vlm4vla_core data --config {params.cfg} --benchmark {wildcards.benchmark}"
        " --workers {threads} --out {output} > {log} 2>&1"
