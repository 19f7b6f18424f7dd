import sys

from infra.meshctl.cli import main

sys.exit(main())
