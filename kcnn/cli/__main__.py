"""``python -m kcnn.cli``: the same as the ``kcnn`` command."""

from kcnn.cli import main

if __name__ == "__main__":
    main()
