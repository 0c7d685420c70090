"""pylibnn computes its products itself: no library GEMM in csrc/, none linked into _C."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import pylibnn

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCE_SUFFIXES = {".cpp", ".cc", ".cu", ".cuh", ".h", ".hpp"}

_OPS = r"(?:mm|matmul|addmm|addmv|mv|linear|bmm|baddbmm|addbmm|dot|einsum|tensordot|_addmm_activation)"
FORBIDDEN = [
    (re.compile(rf"\b(?:at|torch|at::native|torch::nn::functional|F)::{_OPS}(?:_out|_outf)?\s*\("), "ATen/torch GEMM"),
    (re.compile(rf"\.\s*(?:mm|matmul|addmm|bmm|baddbmm|mv|linear)_?\s*\("), "Tensor method GEMM"),
    (re.compile(r"cublas", re.IGNORECASE), "cuBLAS"),
    (re.compile(r"cutlass", re.IGNORECASE), "CUTLASS"),
    (re.compile(r"\bmkl_|\bmkl/|mkl\.h|\bMKL_", re.IGNORECASE), "MKL"),
    (re.compile(r"\bcblas_|cblas\.h"), "CBLAS"),
    (re.compile(r"dnnl|mkldnn|onednn", re.IGNORECASE), "oneDNN"),
    (re.compile(r"\b[sd]gemm_?\s*\("), "Fortran BLAS"),
]


def strip_comments(text):
    """Removes // and /* */ comments (string literals are rare enough here to ignore)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", text)


# Reading torch's TF32 switch names cuBLAS but calls nothing: the CUDA kernels take TF32
# under the same setting torch's nn.Linear does (at::Context::allowTF32CuBLAS).
ALLOWED = re.compile(r"\ballowTF32CuBLAS\s*\(\s*\)")


def library_gemm_calls(text):
    """(line number, what, line) for each forbidden use in C++/CUDA source text."""
    found = []
    for number, line in enumerate(strip_comments(text).splitlines(), start=1):
        checked = ALLOWED.sub("", line)
        for pattern, what in FORBIDDEN:
            if pattern.search(checked):
                found.append((number, what, line.strip()))
    return found


def test_reading_the_tf32_switch_is_allowed():
    assert library_gemm_calls("bool tf32 = at::globalContext().allowTF32CuBLAS();") == []
    assert library_gemm_calls("cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH);")


@pytest.mark.parametrize("snippet", [
    "auto y = at::mm(a, b);", "auto y = torch::matmul(a, b);", "y = at::addmm(c, a, b);",
    "y = a.mm(b);", "y = a.matmul(b.t());", "out.addmm_(a, b);", "at::linear(x, w, b);",
    "cublasSgemm(handle, ...);", "#include <cutlass/gemm/device/gemm.h>", "cblas_sgemm(...);",
    "mkl_sgemm(...);", "dnnl::matmul m;", "at::bmm_out(r, a, b);", "at::baddbmm(c, a, b);",
])
def test_scanner_catches_library_gemm(snippet):
    assert library_gemm_calls(snippet), f"the scanner misses {snippet!r}"


@pytest.mark.parametrize("snippet", [
    "// at::mm would be faster, but we write our own", "/* cublasSgemm\n at::matmul */ int x = 1;",
    "gemm_kernel_avx512(a, b, c);", "void pack_b_panel(const T* b);", "row_sums(dy.transposed(), db);",
])
def test_scanner_ignores_comments_and_own_kernels(snippet):
    assert library_gemm_calls(snippet) == []


def test_csrc_calls_no_library_gemm():
    sources = [p for p in CSRC.rglob("*") if p.suffix in SOURCE_SUFFIXES]
    assert any(p.name == "gemm_engine.cpp" for p in sources), f"no C++ sources found under {CSRC}"
    offences = [f"{p.relative_to(CSRC)}:{n}: {what}: {line}"
                for p in sources for n, what, line in library_gemm_calls(p.read_text())]
    assert not offences, "library GEMM calls in csrc/:\n" + "\n".join(offences)


FORBIDDEN_LIBRARIES = re.compile(r"cublas|cublasLt|mkl|openblas|blis|dnnl|cutlass|libblas|liblapack", re.IGNORECASE)
# at::_ops::<op>::call is how any at::mm / Tensor::mm / torch::matmul call reaches the dispatcher.
FORBIDDEN_SYMBOLS = re.compile(
    rf"at::_ops::{_OPS}(?:_out)?::(?:call|redispatch)|\bcublas|\bcblas_|\bmkl_|dnnl|[sd]gemm_", re.IGNORECASE)


def _tool_output(tool, *args):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    return subprocess.run([tool, *args, pylibnn._C.__file__], capture_output=True, text=True, check=True).stdout


def test_extension_links_no_blas_library():
    needed = [line for line in _tool_output("readelf", "-d").splitlines() if "(NEEDED)" in line]
    assert needed, "readelf found no NEEDED entries"
    assert not [line for line in needed if FORBIDDEN_LIBRARIES.search(line)], "\n".join(needed)


def test_extension_imports_no_gemm_symbols():
    undefined = _tool_output("nm", "-D", "-C", "--undefined-only").splitlines()
    assert any("at::_ops::" in line for line in undefined), "expected some ATen op symbols (e.g. empty)"
    offending = [line for line in undefined if FORBIDDEN_SYMBOLS.search(line)]
    assert not offending, "\n".join(offending)
