"""The llama.cpp build check: a build with AMX kernels that crashes here is refused with its fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sopagent.errors import ModelUnavailableError
from sopagent.models import llamacpp_build
from sopagent.models.llamacpp_build import REBUILD_COMMAND, ensure_runnable_build, has_amx_kernels

AMX_FEATURES = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 | "
CRASHING_CHILD = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
WORKING_CHILD = [sys.executable, "-c", "print('decoded')"]


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Probe results are remembered under a fresh cache folder, and none from this process."""
    monkeypatch.setenv("SOPAGENT_CACHE", str(tmp_path))
    monkeypatch.setattr(llamacpp_build, "_checked", set())
    return tmp_path


def test_amx_kernels_are_read_from_the_build_features() -> None:
    assert has_amx_kernels(AMX_FEATURES)
    assert not has_amx_kernels(AMX_FEATURES.replace("AMX_INT8 = 1", "AMX_INT8 = 0"))
    assert not has_amx_kernels("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | ")


def test_a_build_that_crashes_in_the_probe_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        ensure_runnable_build(tmp_path / "model.gguf", features=AMX_FEATURES, command=CRASHING_CHILD)
    message = str(caught.value)
    assert "SIGSEGV" in message and REBUILD_COMMAND in message
    assert not list((tmp_path / "models").glob("llamacpp-build-*.ok"))  # a crash is never remembered as fine


def test_a_probe_that_passed_is_remembered_per_build(tmp_path: Path) -> None:
    ensure_runnable_build(tmp_path / "model.gguf", features=AMX_FEATURES, command=WORKING_CHILD)
    assert len(list((tmp_path / "models").glob("llamacpp-build-*.ok"))) == 1
    llamacpp_build._checked.clear()
    # the same build is not probed again: a crashing child would raise if it were
    ensure_runnable_build(tmp_path / "model.gguf", features=AMX_FEATURES, command=CRASHING_CHILD)


def test_a_build_without_amx_kernels_is_not_probed(tmp_path: Path) -> None:
    ensure_runnable_build(tmp_path / "model.gguf", features="CPU : AVX2 = 1 | FMA = 1 | ", command=CRASHING_CHILD)


@pytest.mark.model
def test_the_installed_build_decodes_a_short_prompt_in_a_child_process(tmp_path: Path) -> None:
    """The real probe on the real embedded model, whatever this build was compiled with."""
    from sopagent.models.embedded import embedded_model_path
    from sopagent.models.llamacpp_build import probe, probe_command

    model_path = embedded_model_path()
    probe(probe_command(model_path))


AVX512_CPU = {"fpu", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw",
              "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}


def test_build_arguments_follow_the_cpu_and_never_turn_amx_on() -> None:
    from sopagent.models.llamacpp_flags import cmake_args

    with_avx512 = cmake_args(AVX512_CPU)
    assert "-DGGML_NATIVE=OFF" in with_avx512 and "-DGGML_AVX512=ON" in with_avx512
    assert "-DGGML_AVX512_VNNI=ON" in with_avx512 and "-DGGML_AVX512_BF16=ON" not in with_avx512  # not reported
    assert "AMX_INT8=OFF" in with_avx512 and "AMX_INT8=ON" not in with_avx512
    avx2_only = cmake_args(AVX512_CPU - {"avx512bw"})  # AVX-512 needs all five of its base flags
    assert "-DGGML_AVX2=ON" in avx2_only and "AVX512" not in avx2_only


def test_build_arguments_are_printed_from_proc_cpuinfo_by_the_script_itself(tmp_path: Path) -> None:
    """The README runs the module as a plain script before sopagent is installed."""
    import subprocess

    from sopagent.models import llamacpp_flags

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: " + " ".join(sorted(AVX512_CPU)) + "\n\nprocessor\t: 1\n")
    assert llamacpp_flags.cpu_flags(cpuinfo) == AVX512_CPU
    assert llamacpp_flags.cpu_flags(tmp_path / "missing") == set()
    printed = subprocess.run([sys.executable, "-S", llamacpp_flags.__file__], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == llamacpp_flags.cmake_args(llamacpp_flags.cpu_flags())
