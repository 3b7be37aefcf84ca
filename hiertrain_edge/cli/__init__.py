"""The `hiertrain-edge` command: it parses arguments and calls the package."""
