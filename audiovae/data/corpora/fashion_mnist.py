"""Fashion-MNIST (28x28 clothing, 10 labels), as the four IDX files; read as they are (no manifest).
Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) is an existing copy."""

from __future__ import annotations

from audiovae.data.corpora.mnist import idx_archives
from audiovae.data.corpora.registry import Corpus, register

_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

FASHION_MNIST = register(Corpus(
    "fashion_mnist", "Fashion-MNIST (IDX files)", root="fashion_mnist", subsets={"all": idx_archives(_FASHION, {
        "train-images-idx3-ubyte": (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte": (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte": (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte": (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    })}, default_subsets=("all",),
    note="Fashion-MNIST, IDX files (30 MB); Debian's dataset-fashion-mnist is an existing copy",
    extra={"idx": True}))
