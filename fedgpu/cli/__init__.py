"""The ``fedgpu`` command: one module per subcommand, errors mapped to exit codes in :mod:`fedgpu.cli.main`."""

__all__: list[str] = []
