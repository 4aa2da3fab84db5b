# Tables, figures and regressions of the whole study into results/<study>/.
# `snakemake --report report.html` shows the pages under html/: every table, figure and rollout set
# with its caption on the page, in the categories of the study's questions (vlm4vla_core/aggregate/pages.py).


report: "../report/workflow.rst"


def page_category(wildcards):
    # imported when a report is drawn: the aggregate package (pandas, scipy) stays out of every other run
    from vlm4vla_core.aggregate import pages

    return pages.category(wildcards.name)


def report_pages(folder, source):
    return report(directory(folder + "/html"), patterns=["{name}.html"],
                  category=page_category, labels={"result": "{name}", "source": source})


rule aggregate:
    input:
        runs=eval_files(),
        reports=expand(OUT + "/backbones/{backbone}/report.json", backbone=config["backbones"]),
        vqa=vqa_files(),
        claims=config.get("claims", []),
    output:
        OUT + "/main_table.md",
        OUT + "/ablation_table.md",
        OUT + "/index.md",
        OUT + "/inference/cells.md",
        OUT + "/inference/variance_components.json",
        OUT + "/figures/ablation.png",
        pages=report_pages(OUT, "this study's runs"),
    params:
        cfg=STUDY_CONFIG,
        out=OUT,
        sft_logs=[f"{OUT}/sft/{v}/metrics.jsonl" for v, entry in STUDY_VIEW.variants().items()
                  if not entry.source],  # written by the SFT runs (pretraining and embodied) beside their checkpoint
        digest=digest(config),  # VQA scores, backbones, seeds: any change re-draws the tables
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **resources_of("aggregate"),
    log:
        OUT + "/logs/aggregate.log",
    benchmark:
        job_times(OUT + "/logs/aggregate.log"),
    shell:
        "python -m vlm4vla_core aggregate --config {params.cfg} --runs {input.runs}"
        " --reports {input.reports} --vqa {input.vqa} --sft-logs {params.sft_logs} --out {params.out} > {log} 2>&1"


# The published numbers, analysed exactly like a study's runs: snakemake published
rule published_results:
    input:
        "vlm4vla_core/published/published.yaml",
    output:
        "results/published/published_results.csv",
    params:
        cfg=STUDY_CONFIG,
    log:
        "results/published/logs/published_results.log",
    benchmark:
        job_times("results/published/logs/published_results.log"),
    shell:
        "python -m vlm4vla_core published-results --config {params.cfg} --out {output} > {log} 2>&1"


rule published:
    input:
        csv=rules.published_results.output,
        claims=config.get("claims", []),
    output:
        "results/published/main_table.md",
        "results/published/regression_table.md",
        "results/published/index.md",
        "results/published/inference/slopes.json",
        "results/published/figures/ablation.png",
        pages=report_pages("results/published", "published numbers"),
    params:
        cfg=STUDY_CONFIG,
        digest=digest(config),
    resources:
        **resources_of("published"),
    log:
        "results/published/logs/aggregate.log",
    benchmark:
        job_times("results/published/logs/aggregate.log"),
    shell:
        "python -m vlm4vla_core aggregate --config {params.cfg} --results-csv {input.csv} --out results/published > {log} 2>&1"
