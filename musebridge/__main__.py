import sys

from musebridge.cli import main

sys.exit(main())
