"""The ``CMAKE_ARGS`` that build llama.cpp for this machine's CPU, without Intel AMX kernels.

Run before ``pip install`` (only the standard library is used, so it runs before sopagent is
installed)::

    CMAKE_ARGS="$(python3 sopagent/models/llamacpp_flags.py)" .venv/bin/pip install -e '.[embedded]'

llama.cpp's own native build (``GGML_NATIVE``) compiles every kernel the CPU reports; on a virtual
machine whose CPU reports AMX but whose hypervisor does not enable it, the AMX kernels crash the
first prompt of more than one token (see :mod:`sopagent.models.llamacpp_build`). These arguments turn
the native build off and name the vector extensions one by one: AVX2 everywhere, and AVX-512 (with
VBMI, VNNI and BF16 where present) where ``/proc/cpuinfo`` reports it, which evaluated prompts about
1.5 times as fast as the AVX2 build on the embedded model (``benchmarks/llamacpp_build_speed.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

AVX2_ARGS = ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
             "-DGGML_BMI2=ON")
"""The portable build: every x86-64 CPU of the last decade has these."""
AVX512_REQUIRES = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})
"""The CPU flags llama.cpp's ``GGML_AVX512`` compiles for (``-mavx512f -mavx512cd -mavx512vl ...``)."""
AVX512_EXTRAS = {"avx512vbmi": "-DGGML_AVX512_VBMI=ON", "avx512_vnni": "-DGGML_AVX512_VNNI=ON",
                 "avx512_bf16": "-DGGML_AVX512_BF16=ON"}
"""Optional AVX-512 extensions: CPU flag -> llama.cpp option."""
NO_AMX_ARGS = ("-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")
"""AMX stays off whatever the CPU reports."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The flags of the first CPU in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def cmake_args(flags: set[str]) -> str:
    """The ``CMAKE_ARGS`` for a CPU with ``flags``: AVX2, plus AVX-512 where all it needs is there."""
    args = list(AVX2_ARGS)
    if AVX512_REQUIRES <= flags:
        args.append("-DGGML_AVX512=ON")
        args.extend(option for flag, option in AVX512_EXTRAS.items() if flag in flags)
    args.extend(NO_AMX_ARGS)
    return " ".join(args)


if __name__ == "__main__":
    sys.stdout.write(cmake_args(cpu_flags()) + "\n")
