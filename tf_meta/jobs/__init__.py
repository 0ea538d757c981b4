"""Console scripts (`tf-meta-sinusoid`, `tf-meta-build-omniglot`) and how they start."""

import sys

import matplotlib
from absl import app, flags


def run(main, module_name: str) -> None:
    """Runs a job's `main` with absl, its flags and description shown by `--help`.

    absl's `--help` lists the flags of the module it was started as and describes it with
    that module's docstring; started as a console script, that is the script wrapper, which
    has neither. The job module's flags and docstring are handed to it here. A job writes
    its plots as files, so matplotlib is switched to its file backend (Agg) here, when the
    job starts, and not when its module is imported (a notebook that imports a job's
    functions keeps its inline figures).

    Args:
        main: The job's `main(argv)`.
        module_name: The job module's `__name__`.
    """
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__
    matplotlib.use("Agg")
    app.run(main)


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` (jobs pass it to `tf_meta.backup.replace_atomically`)."""
    with open(path, "w") as file:
        file.write(text)
