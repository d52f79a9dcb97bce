"""Kernel-aware mutation testing: how strong is a kernel test suite?

``python -m liger_testing.mutate FILE... --tests TEST...`` plants bugs a kernel author could plausibly
write (a mask off by one, the wrong fill value of a masked load, a reduction over the wrong axis, a term
dropped from what a kernel stores, a missing fp32 upcast, swapped ``where`` branches, the row length
passed as a stride, an option ignored in one kernel), one at a time in a scratch copy of the project,
runs the chosen tests against each, and reports which mutants the tests killed. See
``liger_testing/README.md`` ("Mutation testing").

Nothing here imports ``liger_kernel`` (or Triton): the kernels are read as source.
"""

from liger_testing.mutate.ignore import IgnoreEntry, find_ignored, parse_ignore_file
from liger_testing.mutate.operators import OPERATORS, Edit, Mutant, generate_mutants
from liger_testing.mutate.report import print_table, summarize, write_json
from liger_testing.mutate.runner import MutantResult, classify, run_baseline, run_mutants
from liger_testing.mutate.selection import TestMap, select_tests

__all__ = [
    "OPERATORS",
    "Edit",
    "IgnoreEntry",
    "Mutant",
    "MutantResult",
    "TestMap",
    "classify",
    "find_ignored",
    "generate_mutants",
    "parse_ignore_file",
    "print_table",
    "run_baseline",
    "run_mutants",
    "select_tests",
    "summarize",
    "write_json",
]
