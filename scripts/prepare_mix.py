"""Builds one finetuning mixture from several sources, free of duplicates and of evaluation data.

    python scripts/prepare_mix.py --config examples/mix_demo.yaml --checkpoint_dir checkpoints/... --out_dir data/mix

The steps and the config's keys are documented in lit_gpt/mix.py, which does the work.
"""

from lit_gpt.mix import main, setup

__all__ = ["main", "setup"]

if __name__ == "__main__":
    main()
