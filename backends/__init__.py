"""mxquant's built-in backends, registered through the `mxquant.backends` entry-point group
exactly as third-party plugins are (see pyproject.toml). Each is named lazily: nothing below
is imported until a call for one of its devices, or `mxquant info`, needs it.
"""

from mxquant.backend import BackendSpec
from mxquant.plugins import hookimpl

BUILTIN = (
    BackendSpec("flashinfer", "mxquant.backends.flashinfer:backend", ("cuda",),
                install_hint="pip install 'mxquant[cuda]' (flashinfer-python), on a Blackwell GPU (SM100+)"),
    BackendSpec("xpu", "mxquant.backends.xpu:backend", ("xpu",), install_hint="pip install 'mxquant[xpu]'"),
    BackendSpec("triton", "mxquant.backends.triton:backend", ("cuda", "xpu"),
                install_hint="pip install 'mxquant[cuda]' (triton), or Intel's Triton for XPU"),
    BackendSpec("cpu-native", "mxquant.backends.cpu_native:backend", ("cpu",),
                install_hint="pip install -e . from a source checkout, with a C compiler (gcc or clang)"),
    BackendSpec("cpu-eager", "mxquant.backends.cpu_eager:backend", ("cpu",)),
    BackendSpec("cpu", "mxquant.backends.cpu:backend", ("cpu",)),
)


@hookimpl
def register_backends(register):
    for spec in BUILTIN:
        register(spec)
