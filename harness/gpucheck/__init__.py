"""`python -m harness gpu-check`: what one GPU does with this benchmark (docs/gpu.md).

Training steps of every method and pre-training stage at the paper's patch sizes and batches, under each precision
and memory layout (and torch.compile where it compiles in time); the data loader's rate beside the rate a step
consumes; sliding-window seconds per test case; the throughput of k runs sharing the GPU, measured with k processes;
and from these the projected wall time of a grid. `--quick` runs the same code at tiny sizes on the CPU, so the tests
check the report without a GPU. Modules, in the order the check runs them: `settings` (what is measured), `device`,
`steps`, `pipeline` (loader, sliding window), `concurrency` (+ `worker`, the measuring process), `projection`,
`report`; `compare` is the optional real-data check of `--data`; `command` the CLI.
"""
