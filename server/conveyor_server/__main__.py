import sys

from conveyor_server.cli import main

sys.exit(main())
