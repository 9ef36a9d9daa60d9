"""``python -m nystra_hub.cli COMMAND ...``: what torchrun and accelerate launch run."""

import sys

from nystra_hub.cli import main

sys.exit(main())
