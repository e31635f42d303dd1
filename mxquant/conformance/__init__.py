"""The conformance kit: named adversarial inputs (cases), the inputs `mxquant verify` runs
(inputs), which input blocks a declared deviation may explain (deviation_rules), and the
engine that compares a backend with the reference byte for byte (verify). Plugin authors can
run it on their backend: `mxquant.conformance.check_quantize(backend, device, ...)`."""

from .deviation_rules import DEVIATION_RULES
from .verify import (
    DEVIATION,
    FAIL,
    NOT_SUPPORTED,
    PASS,
    UNAVAILABLE,
    Result,
    Target,
    check_dequantize,
    check_quantize,
    collect,
    exit_code,
)

__all__ = ["DEVIATION_RULES", "PASS", "DEVIATION", "FAIL", "UNAVAILABLE", "NOT_SUPPORTED", "Result", "Target",
           "check_quantize", "check_dequantize", "collect", "exit_code"]
