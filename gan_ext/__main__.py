"""``python -m gan_ext`` (and ``torchrun -m gan_ext train ...``): the ``gan-ext`` command."""
import sys

from .cli import main

sys.exit(main())
