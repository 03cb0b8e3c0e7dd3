"""The recorded environment: flat, JSON-serializable, complete; the CPU description; the GPU branch with fakes."""

from __future__ import annotations

import json
import types

import torch

from effscope.profile import env, telemetry

KEYS = {
    "effscope_version", "timestamp_utc", "hostname", "os", "python_version", "torch_version", "torch_cuda_build",
    "numpy_version", "fvcore_version", "device", "device_type", "device_name", "driver_version", "cuda_version",
    "cudnn_version", "tf32_matmul", "tf32_cudnn", "float32_matmul_precision", "cudnn_benchmark", "dtype", "amp",
    "memory_format", "compile", "cuda_graph", "threads", "torch_threads", "cpu_logical", "cpu_model",
    "memory_total_bytes",
}  # fmt: skip
SCALARS = (str, int, float, bool, type(None))


def test_environment_is_flat_json_with_the_keys():
    e = env.environment(
        "cpu", dtype=torch.bfloat16, threads=2, memory_format=torch.channels_last, compiled="reduce-overhead",
        cuda_graph=False, amp=torch.bfloat16,
    )  # fmt: skip
    assert KEYS <= set(e)
    assert all(isinstance(v, SCALARS) for v in e.values()), {k: type(v) for k, v in e.items()}
    assert json.loads(json.dumps(e)) == e
    assert e["dtype"] == "bfloat16" and e["amp"] == "bfloat16" and e["memory_format"] == "channels_last"
    assert e["compile"] == "reduce-overhead" and e["cuda_graph"] is False and e["threads"] == 2
    assert e["cuda_version"] is None and e["cudnn_version"] is None and e["driver_version"] is None
    assert e["device"] == "cpu" and e["device_name"] and e["torch_threads"] == torch.get_num_threads()
    import effscope

    assert e["effscope_version"] == effscope.__version__ and e["torch_version"] == torch.__version__


def test_environment_on_gpu_reads_cuda_and_nvml(monkeypatch):
    props = types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132, total_memory=85_000_000_000
    )
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(telemetry, "nvml_index", lambda dev: 0)
    info = {k: None for k in ("power_limit_w", "max_sm_clock_mhz", "cuda_driver_version")}
    info |= {"driver_version": "550.54.15", "missing_reason": None}
    monkeypatch.setattr(telemetry, "gpu_info", lambda index: info)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    e = env.environment("cuda:0", dtype=torch.float16)
    assert e["device_name"] == "NVIDIA H100 80GB HBM3" and e["gpu_capability"] == "9.0"
    assert e["driver_version"] == "550.54.15" and e["cuda_version"] == "12.4" and e["device_type"] == "cuda"
    assert all(isinstance(v, SCALARS) for v in e.values())
    json.dumps(e)


def test_cpu_info():
    info = env.cpu_info()
    assert set(info) >= {"cpu_model", "cpu_physical_cores", "cpu_logical", "torch_threads", "memory_total_bytes"}
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["memory_total_bytes"] is None or info["memory_total_bytes"] > 0


CPUINFO = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 0

processor\t: 2
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
core id\t\t: 1

processor\t: 3
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 1
core id\t\t: 0
"""


def test_parse_cpuinfo_counts_physical_cores_across_sockets():
    assert env._parse_cpuinfo(CPUINFO) == ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 3)
    assert env._parse_cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\n") == (None, None)  # aarch64 says neither


# ------------------------------------------------------------------------------- what reproduces a CPU number

NEW_KEYS = {
    "mkl_version", "onednn_version", "torch_parallel_backend", "mkldnn_enabled", "effscope_git_commit",
    "effscope_git_dirty", "load_avg_1m", "load_avg_5m", "load_avg_15m", "cpu_affinity", "cpu_vendor", "cpu_family",
    "cpu_model_number", "cpu_stepping", "cpu_microcode", "cpu_flags", "cpu_freq_governor", "cpu_freq_driver",
    "cpu_freq_mhz", "cpu_freq_max_mhz", "cpu_freq_limit_mhz", "cpu_boost",
}  # fmt: skip

EPYC = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
stepping\t: 1
microcode\t: 0x1000065
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512_bf16 avx512_vnni amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
"""


def test_environment_records_what_tells_cpu_runs_apart(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("KMP_AFFINITY", "granularity=fine,compact")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("EFFSCOPE_UNRELATED", "x")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    e = env.environment("cpu", dtype=torch.float32)
    assert NEW_KEYS <= set(e)
    assert all(isinstance(v, SCALARS) for v in e.values()) and json.loads(json.dumps(e)) == e
    assert e["OMP_NUM_THREADS"] == "1" and e["KMP_AFFINITY"] == "granularity=fine,compact"
    assert e["LD_PRELOAD"] == "/usr/lib/libjemalloc.so.2" and e["MALLOC_ARENA_MAX"] == "2"
    assert "MKL_NUM_THREADS" not in e and "EFFSCOPE_UNRELATED" not in e  # only the set, timing-relevant ones
    assert e["cpu_model"] == env.cpu_info()["cpu_model"]  # the name cache keys use is unchanged
    assert e["memory_format"] == "contiguous"  # as a measurement names it: a calibration's env said contiguous_format
    load = e["load_avg_1m"]
    assert load is None or load >= 0
    assert e["cpu_affinity"] is None or 1 <= e["cpu_affinity"] <= (e["cpu_logical"] or e["cpu_affinity"])


def test_cpu_identity_from_the_first_processor():
    ident = env._cpu_ident(EPYC)
    assert ident == {
        "cpu_vendor": "AuthenticAMD", "cpu_family": 26, "cpu_model_number": 2, "cpu_stepping": 1,
        "cpu_microcode": "0x1000065", "cpu_flags": "fma avx2 avx512f avx512_vnni avx512_bf16 amx_tile",
    }  # fmt: skip
    arm = env._cpu_ident("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd4f\n")
    assert arm["cpu_flags"] == "asimd sve bf16 i8mm"
    assert arm["cpu_family"] is arm["cpu_model_number"] is arm["cpu_stepping"] is arm["cpu_vendor"] is None
    assert env._cpu_ident("")["cpu_flags"] is None  # no flag line: unknown, not "none of them"
    assert env._cpu_ident("flags\t: fpu sse2\n")["cpu_flags"] == ""  # a flag line without any of SPEED_FLAGS


def test_cpu_frequency_reads_cpufreq_and_is_none_where_hidden(monkeypatch):
    files = {
        env._CPUFREQ + "scaling_governor": "performance\n",
        env._CPUFREQ + "scaling_driver": "acpi-cpufreq\n",
        env._CPUFREQ + "scaling_cur_freq": "3400000\n",
        env._CPUFREQ + "cpuinfo_max_freq": "3700000\n",
        env._CPUFREQ + "scaling_max_freq": "3000000\n",
        "/sys/devices/system/cpu/cpufreq/boost": "0\n",
    }
    monkeypatch.setattr(env, "_read", files.get)
    assert env.cpu_frequency() == {
        "cpu_freq_governor": "performance", "cpu_freq_driver": "acpi-cpufreq", "cpu_freq_mhz": 3400.0,
        "cpu_freq_max_mhz": 3700.0, "cpu_freq_limit_mhz": 3000.0, "cpu_boost": False,
    }  # fmt: skip
    monkeypatch.setattr(env, "_read", {"/sys/devices/system/cpu/intel_pstate/no_turbo": "0\n"}.get)
    assert env.cpu_frequency() == {**dict.fromkeys(env.cpu_frequency()), "cpu_boost": True}  # turbo allowed
    monkeypatch.setattr(env, "_read", lambda path: None)
    assert set(env.cpu_frequency().values()) == {None}  # a VM that hides cpufreq: None, never a guess


def test_library_versions_from_parallel_info(monkeypatch):
    info = (
        "ATen/Parallel:\n\tat::get_num_threads() : 2\nOpenMP 201511 (a.k.a. OpenMP 4.5)\n"
        "Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 architecture\n"
        "Intel(R) MKL-DNN v3.7.1 (Git Hash 8d263e693366ef8db40acc569cc7d8edf644556d)\n"
        "ATen parallel backend: OpenMP\n"
    )
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: info)
    env._torch_libraries.cache_clear()
    try:
        assert env._torch_libraries() == {
            "mkl_version": "2024.2", "onednn_version": "3.7.1", "torch_parallel_backend": "OpenMP"
        }  # fmt: skip

        def broken():
            raise RuntimeError("not in this build")

        monkeypatch.setattr(torch.__config__, "parallel_info", broken)
        env._torch_libraries.cache_clear()
        assert set(env._torch_libraries().values()) == {None}
    finally:
        env._torch_libraries.cache_clear()


def test_git_state_of_a_checkout_a_release_and_without_git(tmp_path, monkeypatch):
    import shutil
    import subprocess

    assert env._git_state_of(tmp_path / "site-packages" / "effscope") == (None, None)  # no checkout, no VCS install
    if shutil.which("git") is None:
        return
    root = tmp_path / "repo"
    (root / "effscope").mkdir(parents=True)
    (root / "effscope" / "a.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git("rev-parse", "HEAD").strip()
    assert env._git_state_of(root / "effscope") == (head, False)
    (root / "effscope" / "a.py").write_text("x = 2\n")
    assert env._git_state_of(root / "effscope") == (head, True)

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(env.subprocess, "run", no_git)
    assert env._git_state_of(root / "effscope") == (None, None)


def test_static_facts_are_read_once_per_process(monkeypatch):
    calls = []
    real_run = env.subprocess.run
    monkeypatch.setattr(env.subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    env.git_state.cache_clear()
    try:
        first = env.environment("cpu", dtype=torch.float32)
        n = len(calls)
        assert n <= 2  # rev-parse and status, or nothing outside a checkout
        second = env.environment("cpu", dtype=torch.float32)
        assert len(calls) == n  # git is not asked again per Record
        assert first["effscope_git_commit"] == second["effscope_git_commit"]
    finally:
        env.git_state.cache_clear()
