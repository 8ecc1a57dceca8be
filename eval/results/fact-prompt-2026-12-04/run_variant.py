import os, sys
import paperchat.rag.generate as g
g.TOP_PAPER_CHARS = int(os.environ["TOPCHARS"])
from paperchat.ui.cli import main
sys.exit(main(sys.argv[1:]))
