"""The command-line front-ends, one module per `musebridge` subcommand (musebridge/cli.py holds the table)."""
