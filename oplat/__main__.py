import sys

from oplat.cli import main

sys.exit(main())
