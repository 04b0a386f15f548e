"""One module per ``philora`` subcommand (registered in :data:`philora.cli.COMMANDS`).

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code), or, for a
subcommand that owns its whole argument list (``train``), ``main(argv) -> int``.
"""
