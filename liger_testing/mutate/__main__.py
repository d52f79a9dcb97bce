import sys

from liger_testing.mutate.cli import main

sys.exit(main())
