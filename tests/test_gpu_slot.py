"""workflow/scripts/gpu_slot.sh: concurrent jobs get distinct devices; slots are freed on exit and on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow" / "scripts" / "gpu_slot.sh"


def start(tmp_path: Path, name: str, seconds: float, **env: str) -> subprocess.Popen:
    out = tmp_path / f"{name}.out"
    cmd = f'echo "$CUDA_VISIBLE_DEVICES" > {out}; sleep {seconds}'
    full_env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    full_env.update({"HARNESS_GPU_LOCK_DIR": str(tmp_path / "locks"), **env})
    return subprocess.Popen(["bash", str(SCRIPT), "bash", "-c", cmd], env=full_env, start_new_session=True)


def read_device(tmp_path: Path, name: str, timeout: float = 10.0) -> str:
    out = tmp_path / f"{name}.out"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if out.exists() and out.read_text().strip():
            return out.read_text().strip()
        time.sleep(0.05)
    return ""


def test_concurrent_jobs_get_distinct_slots_and_wait_when_full(tmp_path):
    jobs = [start(tmp_path, f"job{i}", 2.0, HARNESS_GPU_DEVICES="0,1") for i in range(3)]
    time.sleep(1.0)
    first = {read_device(tmp_path, f"job{i}", 0.5) for i in range(3)} - {""}
    assert first == {"0", "1"}  # two slots taken, the third job waits
    for j in jobs:
        assert j.wait(timeout=20) == 0
    devices = [read_device(tmp_path, f"job{i}") for i in range(3)]
    assert set(devices) == {"0", "1"}  # the waiting job got a slot once one was freed


def test_slot_is_freed_after_sigkill(tmp_path):
    victim = start(tmp_path, "victim", 60, HARNESS_GPU_DEVICES="7")
    assert read_device(tmp_path, "victim") == "7"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    nxt = start(tmp_path, "next", 0, HARNESS_GPU_DEVICES="7")
    assert nxt.wait(timeout=10) == 0
    assert read_device(tmp_path, "next") == "7"


def test_existing_cuda_visible_devices_is_kept(tmp_path):
    out = tmp_path / "kept.out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3", "HARNESS_GPU_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("HARNESS_GPU_DEVICES", None)
    subprocess.run(["bash", str(SCRIPT), "bash", "-c", f'echo "$CUDA_VISIBLE_DEVICES" > {out}'], env=env, check=True)
    assert out.read_text().strip() == "3"


def test_no_gpu_falls_back_to_cpu(tmp_path):
    out = tmp_path / "cpu.out"
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "HARNESS_GPU_DEVICES")}
    env["PATH"] = "/usr/bin:/bin"  # no nvidia-smi
    res = subprocess.run(
        ["bash", str(SCRIPT), "bash", "-c", f'echo "${{CUDA_VISIBLE_DEVICES:-unset}}" > {out}'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.read_text().strip() == "unset"
    assert "running on the CPU" in res.stderr


def test_slot_is_freed_after_a_failing_job(tmp_path):
    env = {**os.environ, "HARNESS_GPU_DEVICES": "5", "HARNESS_GPU_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    failed = subprocess.run(["bash", str(SCRIPT), "bash", "-c", "exit 3"], env=env)
    assert failed.returncode == 3  # the job's exit code passes through
    nxt = start(tmp_path, "after_fail", 0, HARNESS_GPU_DEVICES="5")
    assert nxt.wait(timeout=10) == 0 and read_device(tmp_path, "after_fail") == "5"


def fake_nvidia_smi(bin_dir: Path, stdout: str, status: int) -> Path:
    """An `nvidia-smi` on PATH that prints `stdout`, exits with `status` and leaves a marker file when it is called."""
    bin_dir.mkdir(exist_ok=True)
    marker = bin_dir / "nvidia-smi.called"
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ntouch '{marker}'\nprintf '%s' '{stdout}'\nexit {status}\n")
    script.chmod(0o755)
    return marker


def run_slot(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run gpu_slot.sh with the fake nvidia-smi first on PATH; return the result and the job's CUDA_VISIBLE_DEVICES."""
    out = tmp_path / "job.out"
    full_env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "HARNESS_GPU_DEVICES")}
    full_env.update({"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HARNESS_GPU_LOCK_DIR": str(tmp_path / "locks")})
    full_env.update(env)
    cmd = f'echo "${{CUDA_VISIBLE_DEVICES-unset}}|" > {out}'
    res = subprocess.run(["bash", str(SCRIPT), "bash", "-c", cmd], env=full_env, capture_output=True, text=True)
    return res, (out.read_text().strip() if out.exists() else "")


def test_failing_nvidia_smi_never_becomes_a_device(tmp_path):
    marker = fake_nvidia_smi(tmp_path / "bin", "No devices were found\n", 6)
    res, device = run_slot(tmp_path)
    assert res.returncode == 0 and marker.exists()
    assert device == "unset|"  # not CUDA_VISIBLE_DEVICES=Nodeviceswerefound
    assert "nvidia-smi failed (exit 6): No devices were found" in res.stderr
    assert "running on the CPU" in res.stderr
    assert not (tmp_path / "locks").exists()


def test_nvidia_smi_devices_are_taken(tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "0\n1\n", 0)
    res, device = run_slot(tmp_path)
    assert res.returncode == 0 and device == "0|"
    assert (tmp_path / "locks" / "gpu0.lock").exists()


def test_garbage_lines_of_nvidia_smi_are_ignored(tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed\n 3 \n-1\nGPU 4\n", 0)
    res, device = run_slot(tmp_path)
    assert res.returncode == 0 and device == "3|"
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["gpu3.lock"]
    assert "ignoring nvidia-smi output line 'NVIDIA-SMIhasfailed'" in res.stderr


def test_only_garbage_from_nvidia_smi_means_cpu(tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed because it could not communicate\n", 0)
    res, device = run_slot(tmp_path)
    assert res.returncode == 0 and device == "unset|" and "running on the CPU" in res.stderr


def test_empty_cuda_visible_devices_means_cpu_without_probing(tmp_path):
    marker = fake_nvidia_smi(tmp_path / "bin", "0\n", 0)
    res, device = run_slot(tmp_path, CUDA_VISIBLE_DEVICES="")
    assert res.returncode == 0 and device == "|"  # still exported, still empty
    assert not marker.exists()  # nvidia-smi was not called
    assert not (tmp_path / "locks").exists()  # no lock taken
    assert "CUDA_VISIBLE_DEVICES is set but empty" in res.stderr


def test_non_integer_device_override_is_refused(tmp_path):
    res, device = run_slot(tmp_path, HARNESS_GPU_DEVICES="0,gpu1")
    assert res.returncode == 2 and device == ""  # the command never ran
    assert "HARNESS_GPU_DEVICES" in res.stderr and "'gpu1'" in res.stderr


# -- several runs per GPU (compute.runs_per_gpu -> HARNESS_RUNS_PER_GPU) ---------------------------------------------
def test_two_slots_per_device_fill_every_device_before_stacking(tmp_path):
    slots = {"HARNESS_GPU_DEVICES": "0,1", "HARNESS_RUNS_PER_GPU": "2"}
    jobs, devices = [], []
    for i in range(4):  # one after the other: each takes its slot before the next starts
        jobs.append(start(tmp_path, f"job{i}", 4.0, **slots))
        devices.append(read_device(tmp_path, f"job{i}"))
    assert devices == ["0", "1", "0", "1"]
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [
        "gpu0.lock",
        "gpu0.slot1.lock",
        "gpu1.lock",
        "gpu1.slot1.lock",
    ]
    fifth = start(tmp_path, "fifth", 0, **slots)
    assert read_device(tmp_path, "fifth", 1.0) == ""  # never a third job on a device: it waits
    assert all(j.poll() is None for j in jobs) and fifth.poll() is None
    for j in jobs:
        assert j.wait(timeout=20) == 0
    assert fifth.wait(timeout=20) == 0 and read_device(tmp_path, "fifth") in {"0", "1"}


def test_jobs_starting_together_never_share_a_device_while_another_is_idle(tmp_path):
    for round_ in range(3):
        env = {"HARNESS_GPU_DEVICES": "0,1", "HARNESS_RUNS_PER_GPU": "3"}
        jobs = [start(tmp_path, f"r{round_}j{i}", 1.0, **env) for i in range(2)]
        assert sorted(read_device(tmp_path, f"r{round_}j{i}") for i in range(2)) == ["0", "1"]
        for j in jobs:
            assert j.wait(timeout=20) == 0


def test_a_freed_slot_goes_to_the_least_busy_device(tmp_path):
    slots = {"HARNESS_GPU_DEVICES": "0,1", "HARNESS_RUNS_PER_GPU": "2"}
    short = [start(tmp_path, "a", 0.5, **slots)]
    assert read_device(tmp_path, "a") == "0"
    short.append(start(tmp_path, "b", 0.5, **slots))
    assert read_device(tmp_path, "b") == "1"
    long = start(tmp_path, "c", 30, **slots)
    assert read_device(tmp_path, "c") == "0"  # device 0's second slot
    for j in short:
        assert j.wait(timeout=10) == 0
    nxt = start(tmp_path, "d", 0, **slots)  # device 0 runs c, device 1 runs nothing
    assert nxt.wait(timeout=10) == 0 and read_device(tmp_path, "d") == "1"
    os.killpg(long.pid, signal.SIGKILL)
    long.wait(timeout=10)


def test_one_run_per_gpu_is_the_default_and_explicit_one_is_the_same(tmp_path):
    for name, env in (("default", {}), ("explicit", {"HARNESS_RUNS_PER_GPU": "1"})):
        first = start(tmp_path, f"{name}1", 2.0, HARNESS_GPU_DEVICES="4", **env)
        assert read_device(tmp_path, f"{name}1") == "4"
        second = start(tmp_path, f"{name}2", 0, HARNESS_GPU_DEVICES="4", **env)
        assert read_device(tmp_path, f"{name}2", 1.0) == ""  # one slot: the second job waits
        assert first.wait(timeout=20) == 0 and second.wait(timeout=20) == 0
        assert read_device(tmp_path, f"{name}2") == "4"
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["gpu4.lock"]


def test_runs_per_gpu_that_is_not_a_positive_integer_is_refused(tmp_path):
    for bad in ("0", "two", "-1"):
        res, device = run_slot(tmp_path, HARNESS_GPU_DEVICES="0", HARNESS_RUNS_PER_GPU=bad)
        assert res.returncode == 2 and device == ""  # the command never ran
        assert "HARNESS_RUNS_PER_GPU" in res.stderr and "compute.runs_per_gpu" in res.stderr
