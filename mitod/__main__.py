"""Allow ``python -m mitod`` as a synonym for the ``mitod`` command."""

from mitod.cli.daemon_command import main

if __name__ == "__main__":
    main()
