"""``python -m audiovae`` (and ``torchrun -m audiovae``) run the command line."""

from audiovae.cli import main

if __name__ == "__main__":
    main()
