from gdfit.cli import entry

if __name__ == "__main__":  # Dask's spawned workers import this module; they must not run the CLI
    entry()
