"""Build pylibnn._C: hand-written dense-layer kernels as a torch extension.

    pip install --no-build-isolation .        (or -e . for development)

Environment switches (all optional):
    PYLIBNN_CUDA=1|0        force the CUDA kernels on (fail if they cannot be built) or off;
                            unset: build them when a CUDA toolkit and a CUDA torch are present
    CUDA_HOME               the toolkit root, when it cannot be found from nvcc
    TORCH_CUDA_ARCH_LIST    GPU architectures; default: the visible GPU's, else "8.0;9.0+PTX"
    PYLIBNN_DEBUG=1         -O0 -g, for debugging
    PYLIBNN_SANITIZE=1      compile and link the C++ sources with AddressSanitizer and
                            UndefinedBehaviorSanitizer (-O1 -g); load with LD_PRELOAD of libasan
                            (scripts/sanitize.sh does all of it in a scratch copy)
    MAX_JOBS                parallel compile jobs (ninja)

Objects and ninja's state stay in build/ (build/temp), so a rebuild compiles only what
changed; `make clean` removes it.
"""

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"
# The persistent build directory: objects and ninja's state (.ninja_log, .ninja_deps) live
# in BUILD_DIR/temp from one build to the next, so ninja recompiles only what changed.
BUILD_DIR = ROOT / "build"


def log(message):
    print(f"pylibnn setup: {message}", file=sys.stderr)


def env_switch(name):
    """Reads a tri-state switch: True, False, or None when unset."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise SystemExit(f"pylibnn setup: {name}={value!r}: expected 1/0/on/off/true/false/auto")


def is_cuda_root(path):
    """A real toolkit root holds the runtime header and the runtime library."""
    if not path:
        return False
    root = Path(path)
    has_header = (root / "include" / "cuda_runtime.h").is_file()
    lib_dirs = [root / "lib64", root / "lib", root / "targets" / f"{platform.machine()}-linux" / "lib"]
    has_runtime = any(any(d.glob("libcudart.so*")) for d in lib_dirs if d.is_dir())
    return has_header and has_runtime and (root / "bin" / "nvcc").exists()


def nvcc_reported_root():
    """nvcc may be a wrapper script outside the toolkit; its dry run names its real bin dir."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ _HERE_=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    return str(Path(match.group(1).strip()).parent) if match else None


def find_cuda_root():
    """Returns (root or None, the candidates tried)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), nvcc_reported_root()]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    candidates = [c for c in dict.fromkeys(candidates) if c]
    for candidate in candidates:
        if is_cuda_root(candidate):
            return str(Path(candidate).resolve()), candidates
    return None, candidates


def decide_cuda():
    """Decides whether to compile the CUDA sources; sets CUDA_HOME before torch reads it."""
    forced = env_switch("PYLIBNN_CUDA")
    if forced is False:
        return False, "off (PYLIBNN_CUDA=0)"
    root, tried = find_cuda_root()
    # torch.utils.cpp_extension reads CUDA_HOME once, at import: set it first.
    if root:
        os.environ["CUDA_HOME"] = root
    import torch  # noqa: E402  (after CUDA_HOME is settled)

    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is not a CUDA build")
    if root is None:
        problems.append("no CUDA toolkit root (with include/cuda_runtime.h, libcudart and bin/nvcc) "
                        f"among {tried}; set CUDA_HOME")
    if problems:
        if forced:
            raise SystemExit("pylibnn setup: PYLIBNN_CUDA=1 but the CUDA kernels cannot be built: "
                             + "; ".join(problems))
        return False, "off (" + "; ".join(problems) + ")"
    if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
    return True, f"on (CUDA_HOME={root})"


# The CPU instruction sets and their flags. A file csrc/cpu/<name>_<isa>.cpp is a kernel file
# of that set: compiled with its flags alone, and only for a machine the set exists on.
ISA_FLAGS = {
    "portable": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    # the native bfloat16 kernels: vdpbf16ps, and AMX tiles (the compiler emits AMX only for
    # its intrinsics, so the rest of the file runs on any AVX512-BF16 CPU)
    "avx512bf16": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx512bf16", "-mavx2", "-mfma",
                   "-mamx-tile", "-mamx-bf16"],
}
X86_ISAS = {"avx2", "avx512", "avx512bf16"}


def relative(path):
    return str(path.relative_to(ROOT))


def isa_of(path):
    """The instruction set a csrc/cpu file is compiled for, or None for an ordinary file."""
    isa = path.stem.rsplit("_", 1)[-1]
    return isa if path.parent == ROOT / "csrc" / "cpu" and isa in ISA_FLAGS else None


def cpu_isa_sources():
    """Micro-kernels compiled once per instruction set, each with its own flags: (isa, file, flags)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    kernels = []
    for path in sorted((ROOT / "csrc" / "cpu").glob("*.cpp")):
        isa = isa_of(path)
        if isa is not None and (x86 or isa not in X86_ISAS):
            kernels.append((isa, relative(path), ISA_FLAGS[isa]))
    return kernels


def cpp_sources(with_cuda):
    """Every other C++ source of csrc/: the op layer, autograd, the backends. The emulator
    (csrc/cuda/emulation/) is built only by the tests; csrc/cuda/ only with CUDA."""
    sources = []
    for path in sorted((ROOT / "csrc").rglob("*.cpp")):
        parts = path.relative_to(ROOT / "csrc").parts
        if isa_of(path) is not None or "emulation" in parts or (parts[0] == "cuda" and not with_cuda):
            continue
        sources.append(relative(path))
    if with_cuda:
        sources += [relative(path) for path in sorted((ROOT / "csrc" / "cuda").glob("*.cu"))]
    return sources


def write_build_config(directory, with_cuda, isas):
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "visible GPU") if with_cuda else ""
    lines = [
        "// Generated by setup.py at build time; do not edit.",
        "#pragma once",
        f"#define PYLIBNN_BUILT_WITH_CUDA {1 if with_cuda else 0}",
        f'#define PYLIBNN_CUDA_ARCH_LIST "{arch_list}"',
        f'#define PYLIBNN_TORCH_VERSION "{torch.__version__}"',
        f'#define PYLIBNN_COMPILED_CPU_ISAS "{",".join(isas)}"',
    ]
    lines += [f"#define PYLIBNN_HAVE_{isa.upper()} 1" for isa in isas]
    write_if_changed(directory / "pylibnn_build_config.h", "\n".join(lines) + "\n")


def write_if_changed(path, text):
    # An unchanged file keeps its mtime, so nothing that depends on it is rebuilt.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_torch_version_module():
    """pylibnn/_build_config.py: the torch this build compiles against, readable without
    loading _C (which is what cannot load against another torch); pylibnn/ops.py checks
    it before loading _C."""
    import torch

    text = (
        '"""Generated by setup.py at build time; do not edit. What pylibnn._C was built against,\n'
        'read by pylibnn/ops.py before it loads _C."""\n\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"SOURCE_DIR = {str(ROOT)!r}\n"
    )
    write_if_changed(ROOT / "pylibnn" / "_build_config.py", text)


def torch_requirement():
    """The wheel's torch requirement: exactly the distribution built against (the C++ ABI
    of torch changes between releases), so pip cannot pair this build with another torch."""
    return f"torch=={importlib.metadata.version('torch')}"


def make_extension():
    with_cuda, cuda_reason = decide_cuda()
    log(f"CUDA kernels {cuda_reason}")

    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    debug = env_switch("PYLIBNN_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # ASan + UBSan on every C++ object (not the .cu files: nvcc's host compiler would need
    # the flags forwarded, and compute-sanitizer covers the device side). Any UB report
    # aborts (-fno-sanitize-recover) so a test run cannot pass over it. vptr is left out:
    # with -fvisibility=hidden it reports torch's own classes seen through two typeinfos.
    sanitize = env_switch("PYLIBNN_SANITIZE")
    sanitize_flags = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-sanitize-recover=undefined",
                      "-fno-omit-frame-pointer", "-g"] if sanitize else []
    if sanitize and not debug:
        opt = ["-O1"]
    isa_kernels = cpu_isa_sources()
    config_dir = BUILD_DIR / "generated"
    write_build_config(config_dir, with_cuda, list(dict.fromkeys(name for name, _, _ in isa_kernels)))
    write_torch_version_module()

    # Every C++ file under csrc/ except the ISA kernels (compiled below with their own flags)
    # and the emulator (built only by the tests); the .cu files and cuda_ops.cpp when CUDA is on.
    sources = cpp_sources(with_cuda)
    # -fopenmp: at::parallel_for is an inline template whose `#pragma omp parallel` is
    # compiled into *our* objects; without the flag it silently runs on one thread.
    cxx_flags = opt + sanitize_flags + ["-fvisibility=hidden", "-Wall", "-Wno-unknown-pragmas", "-fopenmp"]
    extra_compile_args = {"cxx": cxx_flags}
    include_dirs = [str(ROOT / "csrc"), str(config_dir)]
    if with_cuda:
        extra_compile_args["nvcc"] = opt + ["--expt-relaxed-constexpr", "-lineinfo"]
        extension_type = CUDAExtension
    else:
        extension_type = CppExtension

    extension = extension_type(
        name="pylibnn._C",
        sources=sources,
        include_dirs=include_dirs,
        extra_compile_args=extra_compile_args,
        define_macros=[("PYLIBNN_WITH_CUDA", "1" if with_cuda else "0")],
        extra_link_args=["-fopenmp"] + sanitize_flags,
    )

    class BuildWithIsaKernels(BuildExtension):
        """Compiles each ISA's micro-kernel file with its own flags, then links all objects.

        setuptools applies one flag set to an Extension's sources; the micro-kernels need
        -mavx512f / -mavx2 for their file alone, so that nothing else in the library may
        use those instructions on a CPU that lacks them.

        Objects go to BUILD_DIR/temp whatever the caller asks: pip's editable and wheel
        builds pass a fresh temporary directory each time, which would recompile everything."""

        def finalize_options(self):
            super().finalize_options()
            self.build_temp = str(BUILD_DIR / "temp")

        def build_extension(self, ext):
            for name, source, flags in isa_kernels:
                objects = self.compiler.compile(
                    [source],
                    output_dir=os.path.join(self.build_temp, "isa_" + name),
                    include_dirs=include_dirs,
                    extra_postargs={"cxx": opt + sanitize_flags + ["-fvisibility=hidden", "-Wall"] + flags},
                )
                ext.extra_objects = list(ext.extra_objects or []) + objects
            super().build_extension(ext)

    return extension, BuildWithIsaKernels.with_options(use_ninja=True)


extension, build_ext_class = make_extension()

setup(
    packages=find_packages(include=["pylibnn", "pylibnn.*"]),
    install_requires=[torch_requirement()],
    ext_modules=[extension],
    cmdclass={"build_ext": build_ext_class},
)
