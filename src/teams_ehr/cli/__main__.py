"""``python -m teams_ehr.cli``."""

import sys

from teams_ehr.cli import main

sys.exit(main())
