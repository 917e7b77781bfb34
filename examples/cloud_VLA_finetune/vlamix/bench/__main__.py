"""``python -m vlamix.bench -f benchmarkingjob.yaml``: see :mod:`vlamix.bench.command`."""

import sys

from vlamix.bench.command import main

sys.exit(main(redirect_output=True))
