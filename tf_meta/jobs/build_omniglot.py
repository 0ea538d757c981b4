"""Builds the local Omniglot file (`omniglot/omniglot28.npz`) from TensorFlow Datasets.

`tf_meta.data.load_omniglot` reads Omniglot from a local file, so that training and tests
never download. This job makes that file on a machine that can download: TFDS fetches the
`omniglot` dataset (about 18 MiB) into its data directory, and the job writes the 32,460
drawings at 28x28 with their character, alphabet and background/evaluation labels to
`<output_dir>/omniglot/omniglot28.npz`. Then set `TF_META_DATA_DIR=<output_dir>`.

    tf-meta-build-omniglot --output_dir=$HOME/tf_meta_data
"""

import sys

from absl import flags

from tf_meta import jobs
from tf_meta.data import omniglot

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where omniglot/omniglot28.npz is written.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS's data directory (None: TFDS's default).")
flags.mark_flag_as_required("output_dir")


def main(argv):
    """Builds the file and says where it is."""
    del argv
    path = omniglot.build_local_file(FLAGS.output_dir, FLAGS.tfds_data_dir)
    sys.stdout.write(f"Wrote {path}; set {omniglot.DATA_DIR_VARIABLE}={FLAGS.output_dir}\n")


def run():
    """Console-script entry point."""
    jobs.run(main, __name__)
