"""liger_testing: a toolkit to test Triton (and other) kernels against PyTorch references.

Independent of ``liger_kernel``: downstream projects use it to validate their own kernels.
"""

from liger_testing import profiles, strategies
from liger_testing.assertions import assert_close, assert_close_to_reference, default_floor
from liger_testing.bounds import bounds_checked
from liger_testing.device import set_interpreter_if_no_gpu
from liger_testing.modules import assert_modules_equivalent
from liger_testing.tolerances import Tolerance, tolerances

__all__ = [
    "assert_close",
    "assert_close_to_reference",
    "default_floor",
    "assert_modules_equivalent",
    "bounds_checked",
    "tolerances",
    "Tolerance",
    "strategies",
    "profiles",
    "set_interpreter_if_no_gpu",
]
