# One job per cell, one result file per cell. The rule body runs inside the
# Slurm (or local) job that the submitit executor submits.


rule cell:
    output:
        "results/raw/{gpu}/{backend}/{workload}/{mode}/{point}.json",
    log:
        "logs/cell/{gpu}/{backend}/{workload}/{mode}/{point}.log",
    conda:
        "../../envs/{backend}.yaml"
    resources:
        # One resource holding the GPU type's Slurm settings as JSON: one function
        # call per cell keeps planning 2,000 cells fast (each callable costs Snakemake
        # an inspect.signature per job).
        slurm=slurm_settings,
    script:
        "../scripts/run_cell.py"
