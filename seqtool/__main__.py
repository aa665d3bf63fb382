"""`python -m seqtool` entry point."""

from seqtool.cli import main

if __name__ == "__main__":
    main()
