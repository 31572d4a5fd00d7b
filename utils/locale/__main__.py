"""python -m utils.locale: list the messages of the code that have no Chinese (exit 1 if any); see utils/i18n.py."""

import sys

from ..i18n import main

sys.exit(main())
