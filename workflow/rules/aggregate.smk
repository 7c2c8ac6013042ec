# All result files -> one tidy table -> tables, figures, status grid, all under
# RESULTS_DIR. These run on the submitting machine: quick, no GPU. The summary
# reads every result under RESULTS_DIR/raw (this study's cells and any earlier
# results there), so GPUs measured in other runs sit side by side. Each rule
# reads exactly its inputs: status reads summary.csv; tables read summary.csv
# and the launch sequences of the cells that launch kernel by kernel (the queue
# model's input); figures read those and the cudagraph cells' capture details.


localrules:
    summary,
    tables,
    figures,
    status,


rule summary:
    input:
        RESULT_FILES,
    output:
        f"{RESULTS_DIR}/{SUMMARY_FILE}",
    log:
        "logs/summary/summary.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        summary=f"{RESULTS_DIR}/{SUMMARY_FILE}",
        launches=LAUNCH_FILES,
    output:
        [
            (
                report(
                    path,
                    caption=f"../report/table_{Path(path).stem}.rst",
                    category="Tables",
                )
                if path.endswith(".md")
                else path
            )
            for path in table_outputs(f"{RESULTS_DIR}/{TABLES_DIR}")
        ],
    log:
        "logs/tables/tables.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/tables.py"


rule figures:
    input:
        summary=f"{RESULTS_DIR}/{SUMMARY_FILE}",
        capture=CAPTURE_FILES,
        launches=LAUNCH_FILES,
    output:
        [
            (
                report(
                    path,
                    caption=f"../report/{Path(path).stem}.rst",
                    category="Figures",
                )
                if path.endswith(".png")
                else path
            )
            for path in figure_outputs(f"{RESULTS_DIR}/{FIGURES_DIR}")
        ],
    log:
        "logs/figures/figures.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        capture_sizes=config["graph_pool"]["capture_sizes"],
    script:
        "../scripts/figures.py"


rule status:
    input:
        f"{RESULTS_DIR}/{SUMMARY_FILE}",
    output:
        f"{RESULTS_DIR}/{STATUS_FILE}",
    log:
        "logs/status/status.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/status.py"
