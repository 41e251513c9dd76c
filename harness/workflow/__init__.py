"""Building the DAG, without torch: config validation (`validate`), the grid and its data sources (`grid`), method
variants and sweeps (`variants`), the runs as the rules need them (`plan`), the data rules' inputs (`data_inputs`),
the report rules' outputs (`targets`), and `check-config` / `resolve-run` by hand (`commands`). Nothing imports this
package while a job runs (what a run is lives in `harness.run`)."""
