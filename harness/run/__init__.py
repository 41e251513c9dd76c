"""What a run is, without torch: its folder and files, its stages, its identity (config, code by import closure,
data, threads), the lineage of its files, its lock and the wrapper every job of a run runs in. Training,
evaluation, the reports, the cost estimate and the DAG ask this package instead of re-deriving it."""
