"""What the Snakefile imports to build the DAG, without torch: config validation, the grid, the method table, code
identity, the lineage of results, job control and the cost estimate."""
