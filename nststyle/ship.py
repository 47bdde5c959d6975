"""Write a training checkpoint's inference-only weights (atomic: a kill never leaves a half-written file), or give a
shipped file a new card, the weights unchanged:

    python -m nststyle.ship CKPT nststyle/shipped/variational.pt --recipe "python train.py experiment=..."
    python -m nststyle.ship nststyle/shipped/variational.pt nststyle/shipped/variational.pt --colour-shift 1
"""
from __future__ import annotations

import argparse

from .checkpoints import export


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a training checkpoint's inference-only weights "
                                                 "(or give a shipped file a new card, the weights unchanged).")
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--recipe", default=None, help="the commands that trained it (goes into the file)")
    parser.add_argument("--style-size", type=int, default=None,
                        help="longer side at which the model reads paintings by default (chosen by the evaluation)")
    parser.add_argument("--colour-shift", type=float, default=None,
                        help="how far results move their mean colour to the painting's by default (0-1)")
    parser.add_argument("--colour-match", type=float, default=None,
                        help="then how far results move their colour covariance to the painting's by default (0-1)")
    args = parser.parse_args(argv)
    card = {key: value for key, value in (("recipe", args.recipe), ("style_size", args.style_size),
                                          ("colour_shift", args.colour_shift), ("colour_match", args.colour_match))
            if value is not None}
    path = export(args.checkpoint, args.out, **card)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
