# The fine-tuned variants (general pretraining and embodied SFT): VQA data generated from a benchmark's
# scenes or the general shapes corpus, the SFT stage of each variant (a variant may start from another), and the VQA evaluation of every backbone on every held-out set of vqa_sets: by the
# project's scorer (vqa-eval), or by lmms-eval in its own environment for a set with framework: lmms-eval.
# Checkpoints under sft/<variant>/checkpoints are not outputs: a failed or preempted job resumes from them.
import shlex

from vlm4vla_core.vqa import lmms

VQA_SETS = config.get("vqa_sets") or {}
# pretraining, then embodied-SFT variants: their config entries
SFT = {name: config[v.section][name] for name, v in STUDY_VIEW.variants().items()}


def sft_data(wildcards):
    """The variant's training conversations: its data_path (read when the job runs, as a benchmark's
    data_path), or a generated set's train split."""
    entry = SFT[wildcards.backbone]
    return entry.get("data_path") or f"{OUT}/vqa_data/{entry['dataset']}/train"


def sft_generated(wildcards):
    entry = SFT[wildcards.backbone]
    return [] if entry.get("data_path") else [sft_data(wildcards)]


def heldout_of(name):
    entry = VQA_SETS[name]
    return f"{OUT}/vqa_data/{name}/heldout" if entry.get("generate") else entry["heldout_path"]


def vqa_command(wildcards):
    """The VQA stage of a (backbone, set): vqa-lmms in the lmms-eval environment, or vqa-eval."""
    entry, family = VQA_SETS[wildcards.vqaset], config["backbones"][wildcards.backbone]["family"]
    common = ["--family", family, "--source", source_of(wildcards.backbone), "--set-name", wildcards.vqaset,
              "--num-threads", str(res("vqa_eval", "cpus", 1))]
    if lmms.uses_lmms(entry):
        device = ["--device", "cuda"] if res("vqa_eval", "gpus", 0) else []
        return shlex.join([*shlex.split(entry.get("python", "python")), "-m", "vlm4vla_core", "vqa-lmms", *common,
                           *lmms.stage_options(entry), *device])
    limit = ["--limit", str(entry["limit"])] if entry.get("limit") else []
    return shlex.join(["python", "-m", "vlm4vla_core", "vqa-eval", *common, "--data", heldout_of(wildcards.vqaset),
                       "--image-size", str(BACKBONE_IMAGE_SIZE), "--max-new-tokens",
                       str(entry.get("max_new_tokens", 12)), *limit])


def vqa_env(wildcards):
    return env_file("lmms-eval.yaml" if lmms.uses_lmms(VQA_SETS[wildcards.vqaset]) else "vlm4vla.yaml")


def vqa_files():
    """Every backbone on every set, but an lmms-eval set only for the families lmms-eval has a backend for."""
    return [f"{OUT}/vqa/{b}/{s}.json" for b in config["backbones"] for s in VQA_SETS
            if lmms.measures(VQA_SETS[s], config["backbones"][b]["family"])]


def _sft_launcher(wildcards, resources):
    gpus = resources.get("gpu", 0) if hasattr(resources, "get") else getattr(resources, "gpu", 0)
    n = max(int(gpus or 0), config["training"].get("num_processes", 1))
    return "python" if n == 1 else f"torchrun --standalone --nproc_per_node {n}"


rule vqa_data:
    output:
        train=directory(OUT + "/vqa_data/{vqaset}/train"),
        heldout=directory(OUT + "/vqa_data/{vqaset}/heldout"),
    params:
        cfg=STUDY_CONFIG,
        out=OUT + "/vqa_data/{vqaset}",
        digest=lambda wc: digest(VQA_SETS[wc.vqaset], config["benchmarks"].get(VQA_SETS[wc.vqaset].get("benchmark"))),
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **resources_of("vqa_data"),
    log:
        OUT + "/logs/vqa_data/{vqaset}.log",
    benchmark:
        job_times(OUT + "/logs/vqa_data/{vqaset}.log"),
    shell:
        "python -m vlm4vla_core make-vqa-data --config {params.cfg} --set {wildcards.vqaset} --out {params.out}"
        " > {log} 2>&1"


rule sft:
    input:
        generated=sft_generated,
        base=lambda wc: local_inputs(SFT[wc.backbone]["base"]),
    output:
        directory(OUT + "/sft/{backbone}/checkpoint"),
    params:
        cfg=STUDY_CONFIG,
        run=OUT + "/sft/{backbone}",
        source=lambda wc: source_of(SFT[wc.backbone]["base"]),
        data=sft_data,
        size=BACKBONE_IMAGE_SIZE,
        launch=_sft_launcher,
        digest=lambda wc: digest(SFT[wc.backbone], config["backbones"][SFT[wc.backbone]["base"]], config["training"]),
    threads: res("sft", "cpus", 1)
    conda:
        "../../envs/vlm4vla.yaml"
    resources:
        **resources_of("sft"),
    log:
        OUT + "/sft/{backbone}/sft.log",
    benchmark:
        job_times(OUT + "/sft/{backbone}/sft.log"),
    shell:
        "{params.launch} -m vlm4vla_core sft --config {params.cfg} --variant {wildcards.backbone}"
        " --source {params.source} --data {params.data} --image-size {params.size} --run-dir {params.run} >> {log} 2>&1"


rule vqa_eval:
    input:
        generated=lambda wc: [heldout_of(wc.vqaset)] if VQA_SETS[wc.vqaset].get("generate") else [],
        backbone=backbone_inputs,
    output:
        OUT + "/vqa/{backbone}/{vqaset}.json",
    params:
        command=vqa_command,
    threads: res("vqa_eval", "cpus", 1)
    conda:
        vqa_env
    resources:
        **resources_of("vqa_eval"),
    log:
        OUT + "/logs/vqa_eval/{backbone}_{vqaset}.log",
    benchmark:
        job_times(OUT + "/logs/vqa_eval/{backbone}_{vqaset}.log"),
    shell:
        "{params.command} --out {output} > {log} 2>&1"
