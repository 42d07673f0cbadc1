"""`python -m stacked_ae` is the same as `sae`."""
import sys

from .cli import main

sys.exit(main())
