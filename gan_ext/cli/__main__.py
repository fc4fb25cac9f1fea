"""``python -m gan_ext.cli``: the same main() as the installed ``gan-ext`` script."""
import sys

from . import main

sys.exit(main())
