# Benchmark training sets: generated (Meta-World) or imported from data_path, by each benchmark's plug-in;
# with fixture: synthetic, data_path is first written by the fixture rule (the simulator checks, config/checks/).


rule fixture:
    output:
        directory(FIXTURE),
    params:
        cfg=STUDY_CONFIG,
    localrule: True  # a few seconds and megabytes
    conda:
        "../../envs/vlm4vla.yaml"
    log:
        OUT + "/logs/fixture/{benchmark}.log",
    benchmark:
        job_times(OUT + "/logs/fixture/{benchmark}.log"),
    shell:
        "python -m vlm4vla_core fixture --config {params.cfg} --benchmark {wildcards.benchmark} --out {output} > {log} 2>&1"


rule data:
    input:
        fixture_of,
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
    benchmark:
        job_times(OUT + "/logs/data/{benchmark}.log"),
    shell:
        "python -m vlm4vla_core data --config {params.cfg} --benchmark {wildcards.benchmark}"
        " --workers {threads} --out {output} > {log} 2>&1"
