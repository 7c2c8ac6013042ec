# One job per cell, one result file per cell. The rule body runs inside the
# Slurm (or local) job that the submitit executor submits.
#
# One rule per backend and GPU type: each then names its conda environment and
# its Slurm settings as constants. (Callables evaluated per job, e.g. a resource
# that looks the GPU type up from a wildcard, cost Snakemake an inspect.signature
# for every job, which made planning a 2,000-cell study slow.)
#
# A backend's serving cells of one mode share one job and one server (rule
# serving_<backend>_<gpu>): each still writes its own result file, marked update()
# so that Snakemake keeps a rate already measured when the job runs for another
# (run_shared_server_cells measures only the missing files).

for backend in config["study"]["backends"]:
    SHARED = cgb_cells.shared_server_workloads(config, backend)
    for gpu in config["study"]["gpus"]:

        rule:
            name:
                f"cell_{backend}_{gpu}"
            output:
                cgb_cells.result_path(
                    RESULTS_DIR, gpu, backend, "{workload}", "{mode}", "{point}"
                ),
            log:
                f"logs/cell/{gpu}/{backend}/{{workload}}/{{mode}}/{{point}}.log",
            wildcard_constraints:
                # not the workloads of the shared-server rule below
                workload=cgb_cells.workload_pattern(exclude=SHARED),
            # The pool's cells take seconds, vLLM's minutes (an engine start each):
            # where both wait, the quick ones run first.
            priority: 1 if backend == "graph_pool" else 0
            conda:
                f"../../envs/{backend}.yaml"
            resources:
                slurm=SLURM_SETTINGS[gpu],
            script:
                "../scripts/run_cell.py"

        if SHARED:

            rule:
                name:
                    f"serving_{backend}_{gpu}"
                output:
                    [
                        update(
                            cgb_cells.result_path(
                                RESULTS_DIR, gpu, backend, w, "{mode}", "single"
                            )
                        )
                        for w in SHARED
                    ],
                log:
                    f"logs/cell/{gpu}/{backend}/shared_server/{{mode}}.log",
                conda:
                    f"../../envs/{backend}.yaml"
                resources:
                    slurm=SLURM_SETTINGS[gpu],
                script:
                    "../scripts/run_cell.py"
