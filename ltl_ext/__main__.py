"""``python -m ltl_ext {demo,train,eval,info,robustness}``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
