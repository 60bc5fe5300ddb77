"""CIFAR-10 (32x32x3, 10 labels), as the python batches; read as they are (no manifest)."""

from __future__ import annotations

from audiovae.data.corpora.registry import Archive, Corpus, register

CIFAR10 = register(Corpus(
    "cifar10", "CIFAR-10 (python batches)", root="cifar-10-batches-py", subsets={
        "all": (Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 170498071,
                        md5="c58f30108f718f92721af3b95e74349a", dest="cifar-10-batches-py",
                        member_root="cifar-10-batches-py", marker=("data_batch_1", "test_batch")),),
    }, default_subsets=("all",), note="CIFAR-10, python batches (163 MB)"))
