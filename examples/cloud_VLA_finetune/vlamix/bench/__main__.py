"""``python -m vlamix.bench -f benchmarkingjob.yaml``: see :mod:`vlamix.bench.job`."""

import sys

from vlamix.bench.job import main

sys.exit(main())
