"""`python -m t2itool` is the same as the `t2itool` console script."""

from t2itool.cli.main import main

if __name__ == "__main__":
    main()
