"""The Evaluator reads its evaluation fold as one split of a view of the Examples artifact
(components/evaluator.py): the same records as TFX's reads of each split, in one read."""

from __future__ import annotations

import os

from tfx.components.util import examples_utils, tfxio_utils
from tfx.proto import example_gen_pb2
from tfx_bsl.tfxio import dataset_options

from components.evaluator import FOLD, one_split_view
from tests.test_statistics_gen import examples_artifact


def records(examples, split: str) -> list[bytes]:
    tfxio = tfxio_utils.get_split_tfxio([examples], split, ["test"], raw_record_column_name="raw")
    return [record for batch in tfxio.RecordBatches(dataset_options.RecordBatchesOptions(
        batch_size=64, num_epochs=1)) for record in batch.column("raw").to_pylist()]


def test_the_view_holds_every_record_of_the_fold_as_one_split(tiny_data, tmp_path):
    examples = examples_artifact(str(tmp_path), tiny_data)
    examples_utils.set_payload_format(examples,
                                      example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    fold = ["train00", "train01", "train07"]
    view = one_split_view(examples, fold, str(tmp_path / "view"))

    assert examples_utils.get_payload_format(view) == \
        example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE
    assert os.listdir(os.path.join(view.uri, f"Split-{FOLD}"))
    expected = sorted(record for split in fold for record in records(examples, split))
    assert expected and sorted(records(view, FOLD)) == expected
    assert all(os.path.exists(os.path.join(examples.uri, f"Split-{split}")) for split in fold)
