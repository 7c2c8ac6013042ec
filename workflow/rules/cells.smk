# One job per cell, one result file per cell. The rule body runs inside the
# Slurm (or local) job that the submitit executor submits.


rule cell:
    output:
        "results/raw/{gpu}/{backend}/{workload}/{mode}/{point}.json",
    log:
        "logs/cell/{gpu}/{backend}/{workload}/{mode}/{point}.log",
    params:
        spec=cell_spec,
    resources:
        slurm_partition=slurm_resource("slurm_partition"),
        gres=slurm_resource("gres"),
        slurm_account=slurm_resource("slurm_account"),
        qos=slurm_resource("qos"),
        constraint=slurm_resource("constraint"),
        runtime=slurm_resource("runtime"),
        cpus_per_task=slurm_resource("cpus_per_task"),
        mem_mb=slurm_resource("mem_mb"),
        slurm_extra=slurm_resource("slurm_extra"),
    conda:
        "../../envs/{backend}.yaml"
    script:
        "../scripts/run_cell.py"
