"""The catalogs of the grader's messages: `zh/*.yml`, English -> Chinese (see utils/i18n.py)."""
