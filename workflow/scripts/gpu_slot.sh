#!/usr/bin/env bash
# Run a command on a GPU slot of its own: take a free lock among the visible devices' slots, export
# CUDA_VISIBLE_DEVICES to that device and exec the command, which keeps the lock until it exits (even after SIGKILL,
# the kernel releases a flock when the last descriptor closes). Each device has HARNESS_RUNS_PER_GPU slots (default 1;
# the workflow sets it from config compute.runs_per_gpu): a job takes a slot of the least busy device (fewest slots
# held; ties: the first listed), so devices fill one job each before any gets a second, and never more than
# HARNESS_RUNS_PER_GPU jobs share one. When every slot is held the job waits for one. Snakemake never assigns GPUs itself: `--resources gpu=N`
# only caps how many GPU jobs run at once, and Snakemake never sets CUDA_VISIBLE_DEVICES.
# Which devices, in this order:
#   - HARNESS_GPU_DEVICES set: that comma-separated list of device indices (tests use a fake list); an entry that is
#     not a non-negative integer is an error (exit 2).
#   - CUDA_VISIBLE_DEVICES set and non-empty (SLURM, the user): keep it, take no lock.
#   - CUDA_VISIBLE_DEVICES set but empty: no GPU; run on the CPU with it still exported empty (no probe, no lock).
#   - otherwise probe `nvidia-smi`: only its lines that are non-negative integers count, and none when it fails
#     (it prints errors such as "No devices were found" on stdout). No device: run the command on the CPU.
# HARNESS_GPU_LOCK_DIR is where the lock files live (default: a per-user folder under $TMPDIR or /tmp): gpu<D>.lock for
# a device's first slot, gpu<D>.slot<S>.lock for its slot S >= 1.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: gpu_slot.sh COMMAND [ARGS...]" >&2
    exit 2
fi

# True if $1 is a device index: a non-negative integer.
is_index() {
    [[ "$1" =~ ^[0-9]+$ ]]
}

# Fill the array `devices` from HARNESS_GPU_DEVICES; exit 2 on an entry that is not a device index.
devices_from_override() {
    local entry raw
    IFS=',' read -r -a raw <<< "${HARNESS_GPU_DEVICES}"
    devices=()
    for entry in "${raw[@]}"; do
        entry="${entry// /}"
        if ! is_index "${entry}"; then
            echo "gpu_slot: HARNESS_GPU_DEVICES=${HARNESS_GPU_DEVICES@Q} has entry ${entry@Q}, which is not a" \
                "device index; set it to comma-separated non-negative integers such as 0,1 (or unset it)" >&2
            exit 2
        fi
        devices+=("${entry}")
    done
}

# Fill the array `devices` with the indices nvidia-smi lists; empty when it is missing, fails or lists none.
devices_from_nvidia_smi() {
    local output status=0 line
    devices=()
    if ! command -v nvidia-smi > /dev/null 2>&1; then
        echo "gpu_slot: nvidia-smi not found" >&2
        return
    fi
    output="$(nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null)" || status=$?
    if [[ ${status} -ne 0 ]]; then
        echo "gpu_slot: nvidia-smi failed (exit ${status}): ${output%%$'\n'*}" >&2
        return
    fi
    while IFS= read -r line; do
        line="${line//[[:space:]]/}"
        if is_index "${line}"; then
            devices+=("${line}")
        elif [[ -n "${line}" ]]; then
            echo "gpu_slot: ignoring nvidia-smi output line ${line@Q} (not a device index)" >&2
        fi
    done <<< "${output}"
}

if [[ -n "${HARNESS_GPU_DEVICES:-}" ]]; then
    devices_from_override
elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    echo "gpu_slot: keeping CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES}" >&2
    exec "$@"
elif [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    echo "gpu_slot: CUDA_VISIBLE_DEVICES is set but empty (no GPU); running on the CPU" >&2
    exec "$@"
else
    devices_from_nvidia_smi
fi

if [[ ${#devices[@]} -eq 0 ]]; then
    echo "gpu_slot: no CUDA device found; running on the CPU" >&2
    exec "$@"
fi

slots="${HARNESS_RUNS_PER_GPU:-1}"
if ! [[ "${slots}" =~ ^[1-9][0-9]*$ ]]; then
    echo "gpu_slot: HARNESS_RUNS_PER_GPU=${slots@Q} is not a positive integer; set config compute.runs_per_gpu" \
        "(or the variable) to 1, 2, ..." >&2
    exit 2
fi
lock_dir="${HARNESS_GPU_LOCK_DIR:-${TMPDIR:-/tmp}/harness-gpu-locks-$(id -u)}"
mkdir -p "${lock_dir}"

# The lock file of slot $2 of device $1.
lock_file() {
    if [[ $2 -eq 0 ]]; then
        echo "${lock_dir}/gpu$1.lock"
    else
        echo "${lock_dir}/gpu$1.slot$2.lock"
    fi
}

# Print how many slots of device $1 are held (a held lock cannot be taken; a free one is taken and let go at once).
held_slots() {
    local slot probe held=0
    for ((slot = 0; slot < slots; slot++)); do
        exec {probe}> "$(lock_file "$1" "${slot}")"
        flock -n "${probe}" || held=$((held + 1))
        exec {probe}>&-
    done
    echo "${held}"
}

# Take a free slot of the least busy device (fewest held slots; ties: the first listed). Sets `device`, `slot` and
# `fd` (open on the slot's lock file, holding the lock); returns 1 when every slot is held.
take_slot() {
    local i held best=-1 best_held="${slots}"
    for i in "${!devices[@]}"; do
        held="$(held_slots "${devices[i]}")"
        if ((held < best_held)); then
            best="${i}"
            best_held="${held}"
        fi
    done
    ((best >= 0)) || return 1
    device="${devices[best]}"
    for ((slot = 0; slot < slots; slot++)); do
        exec {fd}> "$(lock_file "${device}" "${slot}")"
        flock -n "${fd}" && return 0
        exec {fd}>&-
    done
    return 1
}

waited=0
while true; do
    # Choosing is serialised (a lock on the lock folder itself), so two jobs starting together never both count a
    # device as idle; the slot's lock outlives this one and passes to the command.
    exec {choosing}< "${lock_dir}"
    flock "${choosing}"
    if take_slot; then
        exec {choosing}<&-
        export CUDA_VISIBLE_DEVICES="${device}"
        echo "gpu_slot: device ${device} slot $((slot + 1)) of ${slots} (lock $(lock_file "${device}" "${slot}"))" >&2
        exec "$@"
    fi
    exec {choosing}<&-
    if [[ ${waited} -eq 0 ]]; then
        echo "gpu_slot: all ${slots} slot(s) of each of the ${#devices[@]} devices busy; waiting for a free one" >&2
        waited=1
    fi
    sleep 1
done
