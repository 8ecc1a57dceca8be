import sys

from eval.bench.cli import main

sys.exit(main())
