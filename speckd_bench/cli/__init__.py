"""The command line: one module per command group; each parses options and calls the library.

Library modules that load torch (nearly all of them) are imported inside the commands that call them, so
that `speckd-bench --help` and usage errors do not wait for torch, transformers and matplotlib."""
