import sys

from paperchat.eval.bench.cli import main

sys.exit(main())
