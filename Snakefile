# vlm4vla: the VLM4VLA study as a DAG over backbones x benchmarks x ablations x seeds.
#   paper study on a cluster:  snakemake --profile slurm   (after: make slurm-profile)
#   demo study on a laptop:    snakemake --configfile config/demo.yaml --cores 2
#   simulator checks:          snakemake --configfile config/checks/libero10.yaml --cores 2   (or calvin.yaml)
# config.yaml (the paper study) is the default; a --configfile replaces it rather than
# extending it (replace-workflow-config in profiles/default).
# Paths, wildcards and resources live here; the logic lives in vlm4vla_core.

from snakemake.utils import min_version

min_version("9.0")


# The paper study unless config files are given: then they replace config.yaml rather than extend it,
# here and in every job the slurm executor starts (which are not given replace-workflow-config).
if not workflow.overwrite_configfiles:
    workflow.configfile("config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/backbones.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"


keep_signatures()


rule all:
    input:
        rules.aggregate.output,
