"""The language server and the `kvsplice` command line."""
