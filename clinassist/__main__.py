"""`python -m clinassist`: the `clinassist` command."""

import sys

from clinassist.cli import main

sys.exit(main())
