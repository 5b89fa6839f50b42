"""``python -m resnet_repro`` (and ``torchrun -m resnet_repro``) runs the CLI."""

from resnet_repro.cli import main

if __name__ == "__main__":
    main()
