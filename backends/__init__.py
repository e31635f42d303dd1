"""mxquant's built-in backends, registered through the `mxquant.backends` entry-point group
exactly as third-party plugins are (see pyproject.toml). Each is named lazily: nothing below
is imported until a call for one of its devices, or `mxquant info`, needs it.
"""

from mxquant.backend import BackendSpec
from mxquant.hookspecs import hookimpl

BUILTIN = (
    BackendSpec("flashinfer", "mxquant.backends.flashinfer:backend", ("cuda",),
                install_hint="pip install flashinfer-python (or, from an mxquant checkout, pip install -e '.[cuda]'), on a Blackwell GPU (SM100+)"),
    BackendSpec("xpu", "mxquant.backends.xpu:backend", ("xpu",),
                install_hint="pip install vllm-xpu-kernels (built against one torch XPU release; or, from an mxquant checkout, pip install -e '.[xpu]')"),
    BackendSpec("triton", "mxquant.backends.triton:backend", ("cuda", "xpu"),
                install_hint="pip install triton (or, from an mxquant checkout, pip install -e '.[cuda]'); on XPU, PyTorch's XPU wheels bring Intel's Triton"),
    BackendSpec("cpu-native", "mxquant.backends.cpu_native:backend", ("cpu",),
                install_hint="pip install -e . from a source checkout, with a C compiler (gcc or clang)"),
    BackendSpec("cpu-eager", "mxquant.backends.cpu_eager:backend", ("cpu",)),
    BackendSpec("cpu", "mxquant.backends.cpu:backend", ("cpu",)),
)


@hookimpl
def register_backends(register):
    for spec in BUILTIN:
        register(spec)
