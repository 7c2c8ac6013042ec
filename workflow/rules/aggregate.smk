# All result files -> one tidy table -> tables, figures, status grid.
# These run on the submitting machine: quick, no GPU. The table reads every
# result under results/raw (this study's cells and any committed earlier
# results), so GPUs measured in other runs sit side by side.


localrules:
    summary,
    tables,
    figures,
    status,


rule summary:
    input:
        cell_results(),
    output:
        "results/summary.csv",
    log:
        "logs/summary/summary.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/aggregate.py"


rule tables:
    input:
        "results/summary.csv",
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
            for path in table_outputs()
        ],
    log:
        "logs/tables/tables.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/tables.py"


rule figures:
    input:
        "results/summary.csv",
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
            for path in figure_outputs()
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
        "results/summary.csv",
    output:
        "results/status.md",
    log:
        "logs/status/status.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/status.py"
