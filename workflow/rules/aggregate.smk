# Tables, figures and regressions of the whole study into results/<study>/.
# `snakemake --report report.html` shows the HTML tables (html/) and the PNG figures (figures/)
# with the captions under workflow/report/ (one caption per kind of table or figure, picked by name).


report: "../report/workflow.rst"


def report_tables(folder, category):
    return report(directory(folder + "/html"), patterns=["{name}.html"], caption="../report/tables.rst",
                  category=category, labels={"table": "{name}"})


def report_figures(folder, category):
    return report(directory(folder + "/figures"), patterns=["{name}.png"], caption="../report/figures.rst",
                  category=category, labels={"figure": "{name}"})


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
        tables=report_tables(OUT, "Study tables"),
        figures=report_figures(OUT, "Study figures"),
    params:
        cfg=STUDY_CONFIG,
        out=OUT,
        digest=digest(config),  # VQA scores, backbones, seeds: any change re-draws the tables
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **resources_of("aggregate"),
    log:
        OUT + "/logs/aggregate.log",
    shell:
        "python -m vlm4vla_core aggregate --config {params.cfg} --runs {input.runs}"
        " --reports {input.reports} --vqa {input.vqa} --out {params.out} > {log} 2>&1"


# The published numbers, analysed exactly like a study's runs: snakemake published
rule published_results:
    input:
        "vlm4vla_core/data/published.yaml",
    output:
        "results/published/published_results.csv",
    params:
        cfg=STUDY_CONFIG,
    log:
        "results/published/logs/published_results.log",
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
        tables=report_tables("results/published", "Published tables"),
        figures=report_figures("results/published", "Published figures"),
    params:
        cfg=STUDY_CONFIG,
        digest=digest(config),
    resources:
        **resources_of("aggregate"),
    log:
        "results/published/logs/aggregate.log",
    shell:
        "python -m vlm4vla_core aggregate --config {params.cfg} --results-csv {input.csv} --out results/published > {log} 2>&1"
