# cudagraph-bench: eager vs CUDA-graph LLM decoding, one Slurm job per cell.
# Data flow: config -> cells -> one job per cell -> one result file per cell
#            -> one tidy table -> tables and figures.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/cells.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
