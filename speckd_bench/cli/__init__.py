"""The command line: one module per command group; each parses options and calls the library."""
