"""Tasks: each a library function first, wrapped by the command line."""
