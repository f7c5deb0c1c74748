"""`run.py`'s subcommands other than starting processes: `users` and `keys` (`cli.auth`),
`participants` (`cli.participants`), `lake` (`cli.lake`), `notify` (`cli.notify`), and the
plain-text tables they print (`cli.textout`).

Only `run.py` imports this package (layering: `tests/test_imports.py`); each command calls the
same functions as the dashboard and the API (`auth/`, `core/`, `storage/`).
"""
