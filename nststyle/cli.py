"""What ``train.py`` and ``infer.py`` share around Hydra: bad command lines end in one line, not a dump.

Hydra reports an unknown config group option (``loss=bogus``) or key (``trainer.bogus=1``) as a
multi-line message with a hint about HYDRA_FULL_ERROR. ``check_overrides`` composes the config once
before ``@hydra.main`` runs and turns such errors into ``error: ...`` on one line and exit status 1.
(The core library does not import this module: it stays free of Hydra.)
"""
from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException


def override_error(config_dir: str | Path, config_name: str, overrides: list[str]) -> str | None:
    """The one-line reason why ``overrides`` do not compose, or None when they do. Multirun sweeps,
    Hydra's own flags and ``hydra.*`` overrides are left to Hydra."""
    if any(arg.startswith("-") for arg in overrides):
        return None
    plain = [arg for arg in overrides if not arg.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            compose(config_name, overrides=plain)
    except MissingConfigException as error:
        group = error.missing_cfg_file.rsplit("/", 1)[0] if error.missing_cfg_file else None
        choices = f": choose from {', '.join(sorted(error.options))}" if error.options else ""
        given = next((arg for arg in plain if group and arg.lstrip("+~").split("=")[0] == group), None)
        return f"unknown option {given or error.missing_cfg_file}{choices}"
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        lines = [line.strip().rstrip(".") for line in str(error).splitlines() if line.strip()]
        return "; ".join(lines[:2]) if lines else type(error).__name__
    return None


def check_overrides(config_name: str, config_dir: str | Path | None = None) -> None:
    """Exit with one line when the command line's overrides do not compose (call before ``main()``)."""
    config_dir = config_dir or Path(sys.argv[0]).resolve().parent / "conf"
    reason = override_error(config_dir, config_name, sys.argv[1:])
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        sys.exit(1)
