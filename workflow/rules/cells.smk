# One job per cell, one result file per cell. The rule body runs inside the
# Slurm (or local) job that the submitit executor submits. One rule per backend,
# so each names its conda environment without a wildcard.


rule cell_graph_pool:
    output:
        "results/raw/{gpu}/graph_pool/{workload}/{mode}/{point}.json",
    log:
        "logs/cell/{gpu}/graph_pool/{workload}/{mode}/{point}.log",
    resources:
        # One resource holding the GPU type's Slurm settings as JSON: one function
        # call per cell keeps planning 2,000 cells fast (each callable costs Snakemake
        # an inspect.signature per job).
        slurm=slurm_settings,
    conda:
        "../../envs/graph_pool.yaml"
    script:
        "../scripts/run_cell.py"


use rule cell_graph_pool as cell_vllm with:
    output:
        "results/raw/{gpu}/vllm/{workload}/{mode}/{point}.json",
    log:
        "logs/cell/{gpu}/vllm/{workload}/{mode}/{point}.log",
    conda:
        "../../envs/vllm.yaml"
