"""`python -m llamaswap` runs the CLI."""

from llamaswap.cli import main

if __name__ == "__main__":
    main()
