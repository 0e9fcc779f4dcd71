from gdfit.cli import entry

entry()
