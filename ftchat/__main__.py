import sys

from ftchat.cli import main

sys.exit(main())
