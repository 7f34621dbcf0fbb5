"""`python -m magicvideo.cli`: the same command as `magicvideo`."""

import sys

from magicvideo.cli import main

sys.exit(main())
