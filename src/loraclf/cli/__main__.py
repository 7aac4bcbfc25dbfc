"""`python -m loraclf.cli` (the multi-process launcher and the tests use it)."""
from . import main

main()
