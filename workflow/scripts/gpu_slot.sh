#!/usr/bin/env bash
# Run a command on a GPU of its own: take the first free lock among the visible devices, export
# CUDA_VISIBLE_DEVICES to it and exec the command, which keeps the lock until it exits (even after SIGKILL, the
# kernel releases a flock when the last descriptor closes). Snakemake never assigns GPUs itself (ecosystem.md §1.2).
#   - CUDA_VISIBLE_DEVICES already set (SLURM, the user): keep it, take no lock.
#   - no CUDA device: run the command unchanged (CPU fallback).
# Environment: HARNESS_GPU_DEVICES overrides the device list (comma separated; tests use a fake list);
# HARNESS_GPU_LOCK_DIR is where the lock files live (default: a per-user folder under $TMPDIR or /tmp).
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: gpu_slot.sh COMMAND [ARGS...]" >&2
    exit 2
fi

if [[ -n "${CUDA_VISIBLE_DEVICES:-}" && -z "${HARNESS_GPU_DEVICES:-}" ]]; then
    echo "gpu_slot: keeping CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES}" >&2
    exec "$@"
fi

if [[ -n "${HARNESS_GPU_DEVICES:-}" ]]; then
    IFS=',' read -r -a devices <<< "${HARNESS_GPU_DEVICES}"
elif command -v nvidia-smi > /dev/null 2>&1; then
    mapfile -t devices < <(nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null || true)
else
    devices=()
fi

if [[ ${#devices[@]} -eq 0 ]]; then
    echo "gpu_slot: no CUDA device found; running on the CPU" >&2
    exec "$@"
fi

lock_dir="${HARNESS_GPU_LOCK_DIR:-${TMPDIR:-/tmp}/harness-gpu-locks-$(id -u)}"
mkdir -p "${lock_dir}"
waited=0
while true; do
    for dev in "${devices[@]}"; do
        dev="${dev// /}"
        exec {fd}> "${lock_dir}/gpu${dev}.lock"
        if flock -n "${fd}"; then
            export CUDA_VISIBLE_DEVICES="${dev}"
            echo "gpu_slot: device ${dev} (lock ${lock_dir}/gpu${dev}.lock)" >&2
            exec "$@"
        fi
        exec {fd}>&-
    done
    if [[ ${waited} -eq 0 ]]; then
        echo "gpu_slot: all ${#devices[@]} devices busy; waiting for a free one" >&2
        waited=1
    fi
    sleep 1
done
