"""Helpers the tests import (one style everywhere: ``from tests.helpers.<module> import ...``); fixtures stay in conftest.py."""
