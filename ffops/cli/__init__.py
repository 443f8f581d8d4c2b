"""The ``python -m ffops`` subcommands (one module each) and what they share."""
